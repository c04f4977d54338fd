package fetch

import (
	"context"
	"sync"
	"sync/atomic"
)

// rawFlights are the blob reads in flight, so that a read of a range one
// of them covers waits for its bytes instead of fetching them again: an
// entry check of a SOCI span that a prediction or another reader is
// fetching, or a reader's chunk in a predicted multi-range request.
type rawFlights struct {
	mu   sync.Mutex
	list []*rawFlight
}

// rawFlight is one blob range being read; b and err are set when done is
// closed.
type rawFlight struct {
	off, n  int64
	done    chan struct{}
	b       []byte
	err     error
	waiters atomic.Int32 // reads waiting for it
}

// start registers a read of [off, off+n).
func (r *rawFlights) start(off, n int64) *rawFlight {
	f := &rawFlight{off: off, n: n, done: make(chan struct{})}
	r.mu.Lock()
	r.list = append(r.list, f)
	r.mu.Unlock()
	return f
}

// finish ends f with its bytes or error, waking whoever waits for it.
func (r *rawFlights) finish(f *rawFlight, b []byte, err error) {
	r.mu.Lock()
	for i, g := range r.list {
		if g == f {
			r.list[i] = r.list[len(r.list)-1]
			r.list = r.list[:len(r.list)-1]
			break
		}
	}
	r.mu.Unlock()
	f.b, f.err = b, err
	close(f.done)
}

// waiting reports how many reads wait for reads in flight.
func (r *rawFlights) waiting() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for _, f := range r.list {
		n += int(f.waiters.Load())
	}
	return n
}

// covering returns a read in flight that covers [off, off+n), if any.
func (r *rawFlights) covering(off, n int64) *rawFlight {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, f := range r.list {
		if f.off <= off && off+n <= f.off+f.n {
			return f
		}
	}
	return nil
}

// wait returns [off, off+n) of f's bytes (shared: read only) once f is
// done, ok false if f failed (the caller reads the range itself) or ctx
// ended first (then err says so).
func (f *rawFlight) wait(ctx context.Context, off, n int64) (b []byte, ok bool, err error) {
	f.waiters.Add(1)
	defer f.waiters.Add(-1)
	select {
	case <-f.done:
	case <-ctx.Done():
		return nil, false, ctx.Err()
	}
	if f.err != nil || int64(len(f.b)) != f.n {
		return nil, false, nil
	}
	return f.b[off-f.off : off-f.off+n : off-f.off+n], true, nil
}
