package fetch

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/lazysnap/lazysnap/estargz"
)

// stepClock is a Clock the test moves; After requests are handed to the
// test with the time they were made at.
type stepClock struct {
	mu     sync.Mutex
	now    time.Time
	afters chan stepAfter
}

type stepAfter struct {
	at time.Time
	d  time.Duration
}

func (c *stepClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *stepClock) advance(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

func (c *stepClock) After(d time.Duration) <-chan time.Time {
	c.afters <- stepAfter{at: c.Now(), d: d}
	return make(chan time.Time) // the test ends the layer instead
}

// TestLinkSharesYield: layers on one Link yield to each other's readers.
// A reader of one layer preempts the background span in flight of the
// other; and the other's background waits while the reader waits, then
// for BackgroundQuiet from the end of that wait, not from its own Start.
func TestLinkSharesYield(t *testing.T) {
	const quiet = 300 * time.Millisecond
	t.Run("a reader of one layer preempts the other's span", func(t *testing.T) {
		link := NewLink()
		xa, da := twoFiles(t)
		a, err := NewLayer(xa, &heldBlob{data: da}, Options{ContentDir: t.TempDir(), Decoder: estargz.Decoder{}, NoPrefetch: true, NoBackground: true, ReadAround: -1, NoPredict: true, Link: link})
		if err != nil {
			t.Fatal(err)
		}
		defer a.Close()
		xb, db := twoFiles(t)
		blob := &heldBlob{data: db, started: make(chan *heldStream, 64)}
		b, err := NewLayer(xb, blob, Options{ContentDir: t.TempDir(), Decoder: estargz.Decoder{}, NoPrefetch: true, NoPredict: true, ReadAround: -1,
			BackgroundQuiet: -1, BackgroundSpanSize: 256 << 10, BackgroundInflight: 256 << 10, Link: link})
		if err != nil {
			t.Fatal(err)
		}
		defer b.Close()
		b.Start()
		s := within(t, blob.started, "the other layer's background span")
		ino, _ := xa.LookupPath("big2")
		if err := a.Ensure(context.Background(), ino, 0, 0); err != nil {
			t.Fatal(err)
		}
		if got := b.Stats().Preempted; got != 4 {
			t.Fatalf("the other layer released %d chunks, want its span's 4", got)
		}
		if cause := within(t, s.ended, "the span's end"); !errors.Is(cause, errPreempted) {
			t.Fatalf("the span ended with %v, want it preempted", cause)
		}
		blob.flow()
		within(t, b.Complete(), "the other layer complete")
	})
	t.Run("the other layer's background waits for the reader, then the quiet period", func(t *testing.T) {
		link := NewLink()
		clock := &stepClock{now: time.Unix(1000, 0), afters: make(chan stepAfter, 16)}
		xa, da := twoFiles(t)
		gate := &gateBlob{data: da, gate: make(chan struct{}), requests: make(chan struct{}, 10)}
		a, err := NewLayer(xa, gate, Options{ContentDir: t.TempDir(), Decoder: estargz.Decoder{}, NoPrefetch: true, NoBackground: true, ReadAround: -1, NoPredict: true, Clock: clock, Link: link})
		if err != nil {
			t.Fatal(err)
		}
		defer a.Close()
		xb, db := twoFiles(t)
		b, err := NewLayer(xb, &heldBlob{data: db, started: make(chan *heldStream, 64)}, Options{ContentDir: t.TempDir(), Decoder: estargz.Decoder{}, NoPrefetch: true,
			BackgroundQuiet: quiet, Clock: clock, Link: link})
		if err != nil {
			t.Fatal(err)
		}
		defer b.Close()
		ino, _ := xa.LookupPath("big2")
		read := make(chan error, 1)
		go func() { read <- a.Ensure(context.Background(), ino, 0, 0) }()
		within(t, gate.requests, "the reader's request")
		start := clock.Now()
		b.Start()
		clock.advance(200 * time.Millisecond)
		close(gate.gate)
		if err := within(t, read, "the read"); err != nil {
			t.Fatal(err)
		}
		got := within(t, clock.afters, "the other layer's quiet period")
		if got.at != start.Add(200*time.Millisecond) || got.d != quiet {
			t.Fatalf("the other layer waits %v from %v after its Start, want %v from the end of the read, 200ms after",
				got.d, got.at.Sub(start), quiet)
		}
	})
}
