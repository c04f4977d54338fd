package fetcher

import (
	"context"
	"net/http"
	"sync"
	"testing"
	"time"
)

func TestMaxConnsPerHost(t *testing.T) {
	data := randBytes(70, 1<<20)
	tests := []struct {
		name  string
		limit int
	}{
		{name: "one", limit: 1},
		{name: "three", limit: 3},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			// Each request waits in the server until as many are in flight
			// as the limit allows (or as are left): the peak is reached by
			// the requests' own events, not by a sleep that hopes they
			// overlap. A fetcher that opened fewer connections than its
			// limit would leave them waiting: the bounded wait fails it.
			const total = 12
			var mu sync.Mutex
			cond := sync.NewCond(&mu)
			cur, peak, done := 0, 0, 0
			srv := newFakeRegistry(t, data, func(_ int, w http.ResponseWriter, r *http.Request) bool {
				mu.Lock()
				defer mu.Unlock()
				cur++
				peak = max(peak, cur)
				cond.Broadcast()
				stop := context.AfterFunc(r.Context(), func() { mu.Lock(); cond.Broadcast(); mu.Unlock() })
				defer stop()
				timeout := time.AfterFunc(10*time.Second, func() { mu.Lock(); cond.Broadcast(); mu.Unlock() })
				defer timeout.Stop()
				deadline := time.Now().Add(10 * time.Second)
				for cur < min(tc.limit, total-done) && r.Context().Err() == nil && time.Now().Before(deadline) {
					cond.Wait()
				}
				cur--
				done++
				return false
			})
			f := newTestFetcher(t, Config{MaxConnsPerHost: tc.limit, MaxRangesPerRequest: 1, CoalesceGap: -1})
			b := mustBlob(t, f, srv.ref(), srv.desc())
			var rs []Range
			for i := range total {
				rs = append(rs, Range{int64(i) * 50_000, 100})
			}
			if _, err := b.ReadRanges(context.Background(), rs); err != nil {
				t.Fatal(err)
			}
			mu.Lock()
			p := peak
			mu.Unlock()
			if p != tc.limit {
				t.Fatalf("peak concurrency %d, want %d", p, tc.limit)
			}
		})
	}
}

func TestBackoff(t *testing.T) {
	f := &Fetcher{cfg: Config{RetryBaseDelay: 100 * time.Millisecond}}
	tests := []struct {
		attempt  int
		min, max time.Duration
	}{
		{1, 50 * time.Millisecond, 100 * time.Millisecond},
		{2, 100 * time.Millisecond, 200 * time.Millisecond},
		{4, 400 * time.Millisecond, 800 * time.Millisecond},
		{10, 2500 * time.Millisecond, 5 * time.Second},
		{60, 2500 * time.Millisecond, 5 * time.Second},
	}
	for _, tc := range tests {
		seen := map[time.Duration]bool{}
		for range 50 {
			d := f.backoff(tc.attempt)
			if d < tc.min || d > tc.max {
				t.Fatalf("attempt %d: %v outside [%v, %v]", tc.attempt, d, tc.min, tc.max)
			}
			seen[d] = true
		}
		if len(seen) < 2 {
			t.Fatalf("attempt %d: no jitter", tc.attempt)
		}
	}
}
