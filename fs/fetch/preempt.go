package fetch

import (
	"context"
	"errors"

	"github.com/lazysnap/lazysnap/index"
)

// Preemption: a background span in flight while a reader waits shares the
// link with the reader's fetch. A SOCI chunk is a whole span of the blob
// (about 1.7 MB compressed, 140 ms at 100 Mbit/s), so a background request
// under way when a reader misses slows the miss by up to that much, at
// every gap in a start long enough for the background to begin. When a
// reader has to wait, the background spans no reader waits on stop: their
// chunks not yet received are released (their claims closed with
// errPreempted, which nobody sees: no reader waits on them, and a later
// reader claims them anew), and the background fetches them again once
// the mount is quiet. A span's chunks already received are kept, and so
// is the chunk under way when its end is within StreamWait bytes (about a
// round trip of the link: stopping it would save less than it wastes).

// errPreempted ends a background span's request stopped for a reader, and
// closes its released claims. It is not a failure: not counted, not
// reported.
var errPreempted = errors.New("fetch: background span preempted by a reader")

// claimAs is claim for a reader (reader true): it counts the reader as a
// waiter of every call it will wait for, until unwait, so that preempt
// spares their spans.
func (l *Layer) claimAs(ids []int, sp *span, reader bool) (mine, wait []want) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, id := range ids {
		if l.isPresent(id) {
			continue
		}
		c, ok := l.inflight[id]
		w := want{id: id, c: c}
		if !ok {
			w = l.claimLocked(id, sp)
			mine = append(mine, w)
		}
		if reader {
			w.c.waiters++
		}
		wait = append(wait, w)
	}
	return mine, wait
}

// unwait ends a reader's waiting for the calls of wait (claimAs).
func (l *Layer) unwait(wait []want) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, w := range wait {
		w.c.waiters--
	}
}

// registerBackground makes a background span fetching ws preemptible
// through stop, until the returned function is called. Its position must
// be set (to its first byte).
func (l *Layer) registerBackground(sp *span, ws []want, streamed bool, stop context.CancelCauseFunc) func() {
	if l.opts.NoPreempt {
		return func() {}
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	sp.ws = append([]want(nil), ws...) // the fetch sorts its own slice
	sp.streamed, sp.stop = streamed, stop
	l.bgSpans[sp] = struct{}{}
	return func() {
		l.mu.Lock()
		delete(l.bgSpans, sp)
		l.mu.Unlock()
	}
}

// preempt stops, for a reader of ino, the background spans in flight, of
// this layer and of the others on its link, that hold no chunk a reader
// waits on and none of ino's (a sequential reader's next chunks), and
// releases the chunks they have not yet received. A span holding the
// reader's bytes as another file's chunk (a SOCI span holds many files)
// is stopped too: the reader fetches them itself, not from a background
// read.
func (l *Layer) preempt(ino index.Ino) {
	if l.opts.NoPreempt {
		return
	}
	spare := func(w want) bool { return l.owner[w.id] == ino }
	l.preemptSpans(spare)
	for _, o := range l.link.others(l) {
		if !o.opts.NoPreempt {
			o.preemptSpans(func(want) bool { return false })
		}
	}
}

// preemptSpans stops the layer's background spans but those holding a
// chunk spare spares.
func (l *Layer) preemptSpans(spare func(want) bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for sp := range l.bgSpans {
		if !sp.preempted.Load() {
			l.preemptLocked(sp, spare)
		}
	}
}

// preemptLocked stops sp unless a reader waits on one of its chunks or
// spare spares one. l.mu is held.
func (l *Layer) preemptLocked(sp *span, spare func(want) bool) {
	pos := sp.pos.Load()
	var open []want
	for _, w := range sp.ws {
		if w.c.closed || w.chunk.End <= pos { // done, or its bytes are in and being stored
			continue
		}
		if w.c.waiters > 0 || w.c.stolen || spare(w) {
			return
		}
		open = append(open, w)
	}
	if len(open) == 0 {
		return
	}
	// a streamed span finishes the chunk under way when its end is near
	cut := pos
	if sp.streamed {
		for _, w := range open {
			if w.chunk.Offset < pos && w.chunk.End-pos <= l.opts.StreamWait {
				cut = max(cut, w.chunk.End)
			}
		}
	}
	var released int64
	for _, w := range open {
		if w.chunk.End <= cut {
			continue
		}
		c := w.c
		c.closed, c.err = true, errPreempted
		if l.inflight[w.id] == c {
			delete(l.inflight, w.id)
		}
		close(c.done)
		released++
	}
	if released == 0 {
		return
	}
	l.preempted.Add(released)
	sp.cut.Store(cut)
	sp.preempted.Store(true)
	if cut <= pos {
		sp.stop(errPreempted)
	}
}

// stopAtCut ends a preempted streamed span once its bytes have reached
// the cut (the end of the chunk it was allowed to finish).
func (sp *span) stopAtCut() {
	if sp.preempted.Load() && sp.pos.Load() >= sp.cut.Load() {
		sp.stop(errPreempted)
	}
}

// preemptedCtx reports whether ctx ended because its span was preempted.
func preemptedCtx(ctx context.Context) bool {
	return errors.Is(context.Cause(ctx), errPreempted)
}

// allSettled reports whether every call of ws has been completed.
func (l *Layer) allSettled(ws []want) bool {
	for i := range ws {
		if !l.settled(&ws[i]) {
			return false
		}
	}
	return true
}
