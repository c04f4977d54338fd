package fetcher

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"testing"
)

// TestStreamRange: the bytes come in order while they arrive; a body cut
// off half-way is resumed from where it stopped, not from the start; the
// range is cached at the end.
func TestStreamRange(t *testing.T) {
	data := randBytes(70, 1<<20)
	const off, n = 1000, 600 << 10
	cutHalfway := cutHalfwayAt(t, data, 1)
	ignoreRange := func(k int, w http.ResponseWriter, r *http.Request) bool {
		r.Header.Del("Range")
		return false
	}
	for _, tc := range []struct {
		name       string
		hook       func(int, http.ResponseWriter, *http.Request) bool
		wantRanges int
	}{
		{"one request", nil, 1},
		{"cut off half-way: resumed", cutHalfway, 2},
		{"Range ignored: cut out of the blob", ignoreRange, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := newFakeRegistry(t, data, tc.hook)
			f := newTestFetcher(t, Config{CacheDir: t.TempDir()})
			b := mustBlob(t, f, s.ref(), s.desc())
			var got []byte
			calls := 0
			err := b.StreamRange(context.Background(), off, n, func(p []byte) {
				calls++
				if len(p) <= len(got) || !bytes.Equal(p, data[off:off+len(p)]) {
					t.Errorf("call %d: %d bytes after %d, or not the range's start", calls, len(p), len(got))
				}
				got = append(got[:0], p...)
			})
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, data[off:off+n]) {
				t.Fatalf("streamed %d bytes, not the range's", len(got))
			}
			if calls < n/streamPiece {
				t.Errorf("%d pieces, want at least %d", calls, n/streamPiece)
			}
			reqs := s.requests()
			if len(reqs) != tc.wantRanges || reqs[0].Range != fmt.Sprintf("bytes=%d-%d", off, off+n-1) {
				t.Fatalf("requests %+v, want %d for bytes %d-%d", reqs, tc.wantRanges, off, off+n-1)
			}
			if len(reqs) > 1 { // resumed where the first body was cut, which the client read some of
				a, e := parseRange(t, reqs[1].Range)
				if a <= off || a > off+n/2 || e != off+n {
					t.Errorf("second request %s, want the rest of the range after some of it", reqs[1].Range)
				}
			}
			// cached: a ReadRange of it makes no request
			if again, err := b.ReadRange(context.Background(), off, n); err != nil || !bytes.Equal(again, data[off:off+n]) {
				t.Fatalf("ReadRange after: %v", err)
			}
			if len(s.requests()) != tc.wantRanges {
				t.Errorf("the streamed range was not cached")
			}
		})
	}
	t.Run("outside the blob", func(t *testing.T) {
		s := newFakeRegistry(t, data, nil)
		f := newTestFetcher(t, Config{})
		b := mustBlob(t, f, s.ref(), s.desc())
		if err := b.StreamRange(context.Background(), int64(len(data))-10, 20, func([]byte) {}); err == nil {
			t.Fatal("a range past the end was accepted")
		}
	})
}
