package fetcher

import (
	"context"
	"net/http"
	"sync/atomic"
	"testing"
	"time"
)

// TestErrorStats: failed operations are counted by kind, once per failed
// operation (not per retry); the caller's own deadline is not counted.
func TestErrorStats(t *testing.T) {
	data := randBytes(11, 64<<10)
	var mode atomic.Value
	mode.Store("")
	srv := newFakeRegistry(t, data, func(n int, w http.ResponseWriter, r *http.Request) bool {
		switch mode.Load() {
		case "500":
			w.WriteHeader(http.StatusInternalServerError)
		case "stall":
			<-r.Context().Done()
		default:
			return false
		}
		return true
	})
	f := newTestFetcher(t, Config{Retries: 1, RequestTimeout: 150 * time.Millisecond})
	b := mustBlob(t, f, srv.ref(), srv.desc())
	want := f.ErrorStats()
	for k, v := range want {
		if v != 0 {
			t.Fatalf("fresh fetcher: %s = %d", k, v)
		}
	}
	check := func(step string) {
		t.Helper()
		got := f.ErrorStats()
		for k, v := range want {
			if got[k] != v {
				t.Errorf("after %s: %s = %d, want %d (all: %v)", step, k, got[k], v, got)
			}
		}
	}

	if _, err := b.ReadRange(context.Background(), 0, 100); err != nil {
		t.Fatal(err)
	}
	check("a good read")

	mode.Store("500")
	if _, err := b.ReadRange(context.Background(), 100, 100); err == nil {
		t.Fatal("read with the registry failing succeeded")
	}
	want["unavailable"]++
	check("a read failing with 500 twice")

	mode.Store("stall")
	if _, err := b.ReadRange(context.Background(), 200, 100); err == nil {
		t.Fatal("read with the registry stalled succeeded")
	}
	want["timeout"]++
	check("a read timing out twice")

	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if _, err := b.ReadRange(ctx, 300, 100); err == nil {
		t.Fatal("read past the caller's deadline succeeded")
	}
	check("the caller's deadline")

	mode.Store("")
	if _, _, err := f.Resolve(context.Background(), srv.host()+"/test/missing:nope"); err == nil {
		t.Fatal("resolving a missing tag succeeded")
	}
	want["not_found"]++
	check("resolving a missing tag")
}
