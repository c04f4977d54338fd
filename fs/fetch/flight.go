package fetch

import (
	"context"
	"sync"
	"sync/atomic"
)

// rawFlights are the blob reads in flight, so that a read of a range one
// of them covers waits for its bytes instead of fetching them again: an
// entry check of a SOCI span that a prediction or another reader is
// fetching, or a reader's chunk in a predicted multi-range request. A
// streamed read hands a waiter its range as soon as those bytes have
// arrived.
type rawFlights struct {
	mu   sync.Mutex
	list []*rawFlight
}

// rawFlight is one blob range being read: the bytes received so far from
// its start (all of them, or an error, once done is closed).
type rawFlight struct {
	off, n  int64
	done    chan struct{}
	waiters atomic.Int32 // reads waiting for it

	mu   sync.Mutex
	b    []byte
	more chan struct{} // closed when b grows
	err  error
}

// start registers a read of [off, off+n).
func (r *rawFlights) start(off, n int64) *rawFlight {
	f := &rawFlight{off: off, n: n, done: make(chan struct{}), more: make(chan struct{})}
	r.mu.Lock()
	r.list = append(r.list, f)
	r.mu.Unlock()
	return f
}

// progress records the bytes of f received so far (from its start; the
// slice is not modified later, only copied from).
func (f *rawFlight) progress(b []byte) {
	f.mu.Lock()
	f.b = b
	close(f.more)
	f.more = make(chan struct{})
	f.mu.Unlock()
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
	f.mu.Lock()
	if err == nil {
		f.b = b
	}
	f.err = err
	f.mu.Unlock()
	close(f.done)
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

// wait returns a copy of [off, off+n) once f has received it, ok false if
// f ended without it (the caller reads the range itself), or ctx's error
// if it ended first.
func (f *rawFlight) wait(ctx context.Context, off, n int64) (b []byte, ok bool, err error) {
	f.waiters.Add(1)
	defer f.waiters.Add(-1)
	end := off - f.off + n
	for {
		f.mu.Lock()
		got, more, ferr := f.b, f.more, f.err
		f.mu.Unlock()
		if int64(len(got)) >= end {
			return append([]byte(nil), got[off-f.off:end]...), true, nil
		}
		select {
		case <-f.done:
			if ferr != nil {
				return nil, false, nil
			}
			f.mu.Lock()
			got = f.b
			f.mu.Unlock()
			if int64(len(got)) < end {
				return nil, false, nil
			}
		case <-more:
		case <-ctx.Done():
			return nil, false, ctx.Err()
		}
	}
}
