package pull

import (
	"context"
	"errors"
	"testing"
	"time"
)

// TestReport: the progress callback is called while the pull runs and
// once at stop; after an error it is not called again and stop returns
// that error; with ctx done there is no last call.
func TestReport(t *testing.T) {
	boom := errors.New("display gone")
	for _, tc := range []struct {
		name      string
		failAt    int // the call that fails (1-based); 0: none
		cancel    bool
		wantErr   error
		wantCalls func(n int) bool
	}{
		{name: "ticks and a last call", wantCalls: func(n int) bool { return n >= 2 }},
		{name: "first error stops the calls", failAt: 1, wantErr: boom, wantCalls: func(n int) bool { return n == 1 }},
		{name: "cancelled: no last call", cancel: true, wantCalls: func(n int) bool { return n == 0 }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			if tc.cancel {
				cancel()
			}
			calls := 0
			progress := func([]Layer) error {
				calls++
				if calls == tc.failAt {
					return boom
				}
				return nil
			}
			stop := report(ctx, progress, time.Millisecond, func() []Layer { return nil })
			time.Sleep(20 * time.Millisecond)
			if err := stop(); !errors.Is(err, tc.wantErr) {
				t.Errorf("stop = %v, want %v", err, tc.wantErr)
			}
			if !tc.wantCalls(calls) {
				t.Errorf("%d calls", calls)
			}
		})
	}
	if err := report(context.Background(), nil, 0, nil)(); err != nil {
		t.Errorf("nil progress: stop = %v", err)
	}
}

func TestLazyLayers(t *testing.T) {
	for _, tc := range []struct {
		name   string
		states []State
		want   int
	}{
		{"none", nil, 0},
		{"all unpacked", []State{Unpacked, Unpacked}, 0},
		{"mixed", []State{Unpacked, Lazy, Lazy}, 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var r Result
			for _, s := range tc.states {
				r.Layers = append(r.Layers, Layer{State: s})
			}
			if got := r.LazyLayers(); got != tc.want {
				t.Errorf("LazyLayers = %d, want %d", got, tc.want)
			}
		})
	}
}
