package fetcher

import (
	"context"
	"sync"
)

// flightGroup deduplicates in-flight chunk fetches. A batch fetches a set
// of keys under its own context, detached from any caller; callers wait on
// the flights of the keys they need. A caller whose context ends stops
// waiting at once; the batch is cancelled only when no caller waits on
// any of its flights any more, and then its flights leave the map so a
// later caller starts afresh.
type flightGroup struct {
	mu sync.Mutex
	m  map[chunkKey]*flight
}

type flight struct {
	b    *batch
	done chan struct{}
	data []byte
	err  error
}

type batch struct {
	ctx     context.Context
	cancel  context.CancelFunc
	keys    []chunkKey
	flights []*flight
	waiters int // guarded by flightGroup.mu
	over    bool
}

// join returns the flights for keys, creating a new batch (returned, to be
// run by the caller with run) for keys that have none. The caller is
// counted as a waiter of every batch involved and must call wait.
func (g *flightGroup) join(parent context.Context, keys []chunkKey) ([]*flight, *batch) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.m == nil {
		g.m = map[chunkKey]*flight{}
	}
	fs := make([]*flight, len(keys))
	var nb *batch
	seen := map[*batch]bool{}
	for i, k := range keys {
		f, ok := g.m[k]
		if !ok {
			if nb == nil {
				ctx, cancel := context.WithCancel(context.WithoutCancel(parent))
				nb = &batch{ctx: ctx, cancel: cancel}
			}
			f = &flight{b: nb, done: make(chan struct{})}
			nb.keys = append(nb.keys, k)
			nb.flights = append(nb.flights, f)
			g.m[k] = f
		}
		fs[i] = f
		if !seen[f.b] {
			seen[f.b] = true
			f.b.waiters++
		}
	}
	return fs, nb
}

// wait waits for all flights. On ctx end it leaves every batch it joined
// and returns ctx's error; results already delivered stay valid.
func (g *flightGroup) wait(ctx context.Context, fs []*flight) error {
	for _, f := range fs {
		select {
		case <-f.done:
		case <-ctx.Done():
			g.leave(fs)
			return ctx.Err()
		}
	}
	g.leave(fs)
	return nil
}

// leave drops the caller's waiter count on each batch of fs; a batch that
// is left by everyone before finishing is cancelled and forgotten.
func (g *flightGroup) leave(fs []*flight) {
	g.mu.Lock()
	defer g.mu.Unlock()
	seen := map[*batch]bool{}
	for _, f := range fs {
		b := f.b
		if seen[b] {
			continue
		}
		seen[b] = true
		b.waiters--
		if b.waiters == 0 && !b.over {
			b.over = true
			b.cancel()
			g.forgetLocked(b)
		}
	}
}

// finish delivers a batch's results (data[i]/errs[i] for b.keys[i]) and
// removes its flights from the map. Callers store cacheable results before
// calling finish, so that a caller arriving after finish finds them in the
// cache.
func (g *flightGroup) finish(b *batch, data [][]byte, errs []error) {
	g.mu.Lock()
	if !b.over {
		b.over = true
		g.forgetLocked(b)
	}
	g.mu.Unlock()
	for i, f := range b.flights {
		f.data, f.err = data[i], errs[i]
		close(f.done)
	}
	b.cancel()
}

func (g *flightGroup) forgetLocked(b *batch) {
	for i, k := range b.keys {
		if g.m[k] == b.flights[i] {
			delete(g.m, k)
		}
	}
}

// waiters returns the number of callers waiting on the flight of k (for
// tests).
func (g *flightGroup) waiters(k chunkKey) int {
	g.mu.Lock()
	defer g.mu.Unlock()
	if f, ok := g.m[k]; ok {
		return f.b.waiters
	}
	return 0
}
