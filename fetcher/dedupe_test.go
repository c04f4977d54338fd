package fetcher

import (
	"bytes"
	"context"
	"errors"
	"net/http"
	"sync"
	"testing"
	"time"
)

// waitFor polls cond until it holds or a deadline passes.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

// gatedRegistry is a fake registry whose blob answers wait for release.
func gatedRegistry(t *testing.T, data []byte) (*fakeRegistry, chan struct{}) {
	release := make(chan struct{})
	srv := newFakeRegistry(t, data, func(_ int, w http.ResponseWriter, r *http.Request) bool {
		select {
		case <-release:
		case <-r.Context().Done():
			return true
		}
		return false
	})
	return srv, release
}

func TestDedupeConcurrentReaders(t *testing.T) {
	data := randBytes(20, 1<<20)
	const off, n, readers = 123_456, 64 << 10, 100
	tests := []struct {
		name     string
		cacheDir bool
		memCache int64
	}{
		{name: "disk and memory cache", cacheDir: true},
		{name: "no cache at all", memCache: -1},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			srv, release := gatedRegistry(t, data)
			cfg := Config{MemCacheMaxBytes: tc.memCache}
			if tc.cacheDir {
				cfg.CacheDir = t.TempDir()
			}
			f := newTestFetcher(t, cfg)
			b := mustBlob(t, f, srv.ref(), srv.desc())
			var wg sync.WaitGroup
			results := make([][]byte, readers)
			errs := make([]error, readers)
			for i := range readers {
				wg.Add(1)
				go func() {
					defer wg.Done()
					results[i], errs[i] = b.ReadRange(context.Background(), off, n)
				}()
			}
			k := b.key(Range{off, n})
			waitFor(t, "all readers to join the flight", func() bool { return f.flights.waiters(k) == readers })
			close(release)
			wg.Wait()
			for i := range readers {
				if errs[i] != nil {
					t.Fatalf("reader %d: %v", i, errs[i])
				}
				if !bytes.Equal(results[i], data[off:off+n]) {
					t.Fatalf("reader %d: wrong bytes", i)
				}
			}
			// Every reader owns its slice.
			results[0][0] ^= 0xff
			if results[1][0] == results[0][0] {
				t.Fatal("readers share a result buffer")
			}
			if r := srv.blobRequests(); r != 1 {
				t.Fatalf("upstream requests = %d, want 1", r)
			}
		})
	}
}

func TestDedupeCancelledReader(t *testing.T) {
	data := randBytes(21, 256<<10)
	tests := []struct {
		name        string
		cancelAll   bool
		wantReqs    int
		wantAborted bool // the shared fetch was aborted upstream
	}{
		{name: "one of two cancels: the other gets the bytes", wantReqs: 1},
		{name: "all cancel: the shared fetch is abandoned", cancelAll: true, wantReqs: 1, wantAborted: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			aborted := make(chan struct{}, 1)
			release := make(chan struct{})
			srv := newFakeRegistry(t, data, func(_ int, w http.ResponseWriter, r *http.Request) bool {
				select {
				case <-release:
					return false
				case <-r.Context().Done():
					aborted <- struct{}{}
					return true
				}
			})
			f := newTestFetcher(t, Config{})
			b := mustBlob(t, f, srv.ref(), srv.desc())
			k := b.key(Range{0, 1000})

			ctxA, cancelA := context.WithCancel(context.Background())
			ctxB, cancelB := context.WithCancel(context.Background())
			defer cancelB()
			errA, resB := make(chan error, 1), make(chan error, 1)
			var gotB []byte
			go func() { _, err := b.ReadRange(ctxA, 0, 1000); errA <- err }()
			go func() {
				var err error
				gotB, err = b.ReadRange(ctxB, 0, 1000)
				resB <- err
			}()
			waitFor(t, "two waiters", func() bool { return f.flights.waiters(k) == 2 })
			waitFor(t, "the request", func() bool { return srv.blobRequests() == 1 })
			cancelA()
			select {
			case err := <-errA:
				if !errors.Is(err, context.Canceled) {
					t.Fatalf("cancelled reader: %v", err)
				}
			case <-time.After(2 * time.Second):
				t.Fatal("cancelled reader did not return")
			}
			if tc.cancelAll {
				cancelB()
				if err := <-resB; !errors.Is(err, context.Canceled) {
					t.Fatalf("reader B: %v", err)
				}
				select {
				case <-aborted:
				case <-time.After(2 * time.Second):
					t.Fatal("shared fetch not aborted after every reader left")
				}
				if f.flights.waiters(k) != 0 {
					t.Fatal("abandoned flight still registered")
				}
				close(release)
				// A new reader starts a fresh fetch and succeeds.
				got, err := b.ReadRange(context.Background(), 0, 1000)
				if err != nil || !bytes.Equal(got, data[:1000]) {
					t.Fatalf("fresh read: %v", err)
				}
				if r := srv.blobRequests(); r != 2 {
					t.Fatalf("requests %d, want 2", r)
				}
				return
			}
			select {
			case <-aborted:
				t.Fatal("a cancelled reader aborted the shared fetch")
			case <-time.After(50 * time.Millisecond):
			}
			close(release)
			if err := <-resB; err != nil {
				t.Fatalf("reader B: %v", err)
			}
			if !bytes.Equal(gotB, data[:1000]) {
				t.Fatal("reader B: wrong bytes")
			}
			if r := srv.blobRequests(); r != tc.wantReqs {
				t.Fatalf("requests %d, want %d", r, tc.wantReqs)
			}
		})
	}
}

// TestDedupeOverlappingBatches: a ReadRanges that needs a range already in
// flight for another caller waits for it instead of fetching it again.
func TestDedupeOverlappingBatches(t *testing.T) {
	data := randBytes(22, 1<<20)
	srv, release := gatedRegistry(t, data)
	f := newTestFetcher(t, Config{MemCacheMaxBytes: -1, CoalesceGap: -1})
	b := mustBlob(t, f, srv.ref(), srv.desc())
	ctx := context.Background()
	first := make(chan error, 1)
	go func() { _, err := b.ReadRange(ctx, 100_000, 1000); first <- err }()
	waitFor(t, "first flight", func() bool { return f.flights.waiters(b.key(Range{100_000, 1000})) == 1 })
	second := make(chan error, 1)
	rs := []Range{{100_000, 1000}, {500_000, 1000}}
	var got [][]byte
	go func() {
		var err error
		got, err = b.ReadRanges(ctx, rs)
		second <- err
	}()
	waitFor(t, "second caller", func() bool { return f.flights.waiters(b.key(Range{100_000, 1000})) == 2 })
	close(release)
	if err := <-first; err != nil {
		t.Fatal(err)
	}
	if err := <-second; err != nil {
		t.Fatal(err)
	}
	for i, r := range rs {
		if !bytes.Equal(got[i], data[r.Off:r.End()]) {
			t.Fatalf("range %d wrong", i)
		}
	}
	var ranges []string
	for _, r := range srv.requests() {
		ranges = append(ranges, r.Range)
	}
	if len(ranges) != 2 || ranges[0] == ranges[1] {
		t.Fatalf("requests %q: want one for each range", ranges)
	}
}
