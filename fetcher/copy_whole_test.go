package fetcher

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"syscall"
	"testing"
)

// TestParallelCopy: the whole blob arrives in order, in one stream or in
// parts over several requests; a part cut off half-way resumes after what
// it had; nothing is cached; a writer's error ends the copy with that
// error and is not retried.
func TestParallelCopy(t *testing.T) {
	data := randBytes(71, 3<<20+12345)
	const part = 512 << 10
	cutOnce := cutHalfwayAt(t, data, 2)
	for _, tc := range []struct {
		name      string
		conns     int
		hook      func(int, http.ResponseWriter, *http.Request) bool
		wantReqs  int
		wantWhole bool // one request of the whole blob
	}{
		{"one stream", 1, nil, 1, true},
		{"parts", 4, nil, (len(data) + part - 1) / part, false},
		{"parts, one cut off half-way", 3, cutOnce, (len(data)+part-1)/part + 1, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := newFakeRegistry(t, data, tc.hook)
			f := newTestFetcher(t, Config{CacheDir: t.TempDir()})
			b := mustBlob(t, f, s.ref(), s.desc())
			var out bytes.Buffer
			if err := b.ParallelCopy(context.Background(), &out, tc.conns, part); err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(out.Bytes(), data) {
				t.Fatalf("copied %d bytes, not the blob's %d", out.Len(), len(data))
			}
			reqs := s.requests()
			if len(reqs) != tc.wantReqs {
				t.Fatalf("%d requests, want %d: %+v", len(reqs), tc.wantReqs, reqs)
			}
			if tc.wantWhole && reqs[0].Range != fmt.Sprintf("bytes=0-%d", len(data)-1) {
				t.Errorf("one stream asked %q", reqs[0].Range)
			}
			if st := f.CacheUsage(); st.Entries != 0 || st.MemEntries != 0 {
				t.Errorf("a copy was cached: %+v", st)
			}
		})
	}
	t.Run("the writer fails", func(t *testing.T) {
		s := newFakeRegistry(t, data, nil)
		f := newTestFetcher(t, Config{})
		b := mustBlob(t, f, s.ref(), s.desc())
		for _, conns := range []int{1, 4} {
			err := b.ParallelCopy(context.Background(), failWriter{syscall.ENOSPC}, conns, part)
			if !errors.Is(err, syscall.ENOSPC) {
				t.Fatalf("conns %d: %v, want ENOSPC", conns, err)
			}
		}
	})
}

type failWriter struct{ err error }

func (f failWriter) Write([]byte) (int, error) { return 0, f.err }
