package fetcher

import (
	"context"
	"errors"
	"testing"
)

// TestAttempts: Fetcher.attempts retries what may succeed on another try
// up to Config.Retries, returns at once what will not, gives a mirror that
// is down one attempt and then passes it over, and for a stream counts
// only attempts that received nothing.
func TestAttempts(t *testing.T) {
	unavailable := attemptErr(ErrUnavailable, 503, nil)
	for _, tc := range []struct {
		name         string
		mirror       bool
		stream       bool // received grows by one byte per failed attempt
		results      []error
		wantAttempts int
		wantKind     error // nil: success
		thenResting  bool  // a second operation finds the host resting
	}{
		{name: "success after retries", results: []error{unavailable, unavailable, nil}, wantAttempts: 3},
		{name: "budget exhausted", results: []error{unavailable, unavailable, unavailable, nil}, wantAttempts: 3, wantKind: ErrUnavailable},
		{name: "not retryable", results: []error{attemptErr(ErrNotFound, 404, nil), nil}, wantAttempts: 1, wantKind: ErrNotFound},
		{name: "mirror down: one attempt, then rested", mirror: true, results: []error{unavailable, nil}, wantAttempts: 1, wantKind: ErrUnavailable, thenResting: true},
		{name: "mirror refusing: retried, not rested", mirror: true, results: []error{badResponse(206, "x"), nil}, wantAttempts: 2},
		{name: "stream making progress outlasts the budget", stream: true, results: []error{unavailable, unavailable, unavailable, unavailable, nil}, wantAttempts: 5},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newTestFetcher(t, Config{Retries: 2})
			o := operation{op: "get", host: "registry.test", rng: "bytes=0-9", mirror: tc.mirror}
			var received func() int64
			var got int64
			if tc.stream {
				received = func() int64 { return got }
			}
			n := 0
			err := f.attempts(context.Background(), o, received, func(context.Context) error {
				err := tc.results[n]
				n++
				if err != nil && tc.stream {
					got++
				}
				return err
			})
			if n != tc.wantAttempts {
				t.Errorf("%d attempts, want %d", n, tc.wantAttempts)
			}
			if tc.wantKind == nil {
				if err != nil {
					t.Fatalf("err = %v, want success", err)
				}
				return
			}
			var re *RequestError
			if !errors.As(err, &re) || !errors.Is(err, tc.wantKind) || re.Attempts != tc.wantAttempts {
				t.Fatalf("err = %v, want a *RequestError of %v after %d attempts", err, tc.wantKind, tc.wantAttempts)
			}
			if !tc.thenResting {
				return
			}
			err = f.attempts(context.Background(), o, nil, func(context.Context) error {
				t.Error("an attempt on a resting mirror")
				return nil
			})
			if !errors.Is(err, errMirrorResting) || !errors.Is(err, ErrUnavailable) {
				t.Errorf("second operation: err = %v, want the mirror passed over", err)
			}
		})
	}
}
