package fetcher

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"syscall"
	"testing"
	"time"
)

// TestParallelCopy: the whole blob arrives in order, in one stream or,
// past the probe (one part alone, then two at once), in parts or in one
// stream for the rest; copyParts fetches parts over several requests, a
// part cut off half-way resuming after what it had; nothing is cached; a
// writer's error ends the copy with that error and is not retried.
func TestParallelCopy(t *testing.T) {
	data := randBytes(71, 3<<20+12345)
	const part = 256 << 10
	nparts := (len(data) + part - 1) / part
	rng := func(a, n int) string { return fmt.Sprintf("bytes=%d-%d", a, a+n-1) }
	for _, tc := range []struct {
		name string
		copy func(b *Blob, w *bytes.Buffer) error
		hook func(t *testing.T) func(int, http.ResponseWriter, *http.Request) bool
		// the requests, exactly (wantFirst: the first ones only, in any
		// order)
		want, wantFirst []string
		wantReqs        int
	}{
		{name: "one stream", copy: func(b *Blob, w *bytes.Buffer) error { return b.ParallelCopy(context.Background(), w, 1, part) },
			want: []string{rng(0, len(data))}},
		{name: "probe, then the rest", copy: func(b *Blob, w *bytes.Buffer) error { return b.ParallelCopy(context.Background(), w, 4, part) },
			wantFirst: []string{rng(0, part), rng(part, part), rng(2*part, part)}},
		{name: "parts", copy: func(b *Blob, w *bytes.Buffer) error {
			_, err := b.copyParts(context.Background(), w, 0, int64(len(data)), 4, part)
			return err
		}, wantReqs: nparts},
		{name: "parts, one cut off half-way", copy: func(b *Blob, w *bytes.Buffer) error {
			_, err := b.copyParts(context.Background(), w, 0, int64(len(data)), 3, part)
			return err
		}, hook: func(t *testing.T) func(int, http.ResponseWriter, *http.Request) bool { return cutHalfwayAt(t, data, 2) }, wantReqs: nparts + 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var hook func(int, http.ResponseWriter, *http.Request) bool
			if tc.hook != nil {
				hook = tc.hook(t)
			}
			s := newFakeRegistry(t, data, hook)
			f := newTestFetcher(t, Config{CacheDir: t.TempDir()})
			b := mustBlob(t, f, s.ref(), s.desc())
			var out bytes.Buffer
			if err := tc.copy(b, &out); err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(out.Bytes(), data) {
				t.Fatalf("copied %d bytes, not the blob's %d", out.Len(), len(data))
			}
			var got []string
			for _, r := range s.requests() {
				got = append(got, r.Range)
			}
			switch {
			case tc.want != nil && !slices.Equal(got, tc.want),
				tc.wantFirst != nil && (len(got) < len(tc.wantFirst) || !sameSet(got[:len(tc.wantFirst)], tc.wantFirst) || got[0] != tc.wantFirst[0]),
				tc.wantReqs > 0 && len(got) != tc.wantReqs:
				t.Fatalf("requests %v; want %v, first %v, or %d of them", got, tc.want, tc.wantFirst, tc.wantReqs)
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

// sameSet reports whether a and b hold the same strings, in any order.
func sameSet(a, b []string) bool {
	return slices.Equal(slices.Sorted(slices.Values(a)), slices.Sorted(slices.Values(b)))
}

// TestParallelPays: two parts at once must be parallelGain times faster
// per part than one alone.
func TestParallelPays(t *testing.T) {
	for _, tc := range []struct {
		name     string
		one, two time.Duration
		want     bool
	}{
		{"a shared bottleneck: two take twice as long", time.Second, 2 * time.Second, false},
		{"a little faster", time.Second, 1600 * time.Millisecond, false},
		{"each connection held back: two take as long as one", time.Second, time.Second, true},
	} {
		if got := parallelPays(tc.one, tc.two); got != tc.want {
			t.Errorf("%s: %v, want %v", tc.name, got, tc.want)
		}
	}
}

type failWriter struct{ err error }

func (f failWriter) Write([]byte) (int, error) { return 0, f.err }
