package fetch

import (
	"sort"
	"sync"
	"time"
)

// wake tells the background loops on the layer's link that a reader has
// stopped waiting or background bytes have arrived.
func (l *Layer) wake() { l.link.wake() }

// bgRelease counts n background bytes as no longer in flight.
func (l *Layer) bgRelease(n int64) {
	if n <= 0 {
		return
	}
	l.sigMu.Lock()
	l.bgInflight -= n
	l.sigMu.Unlock()
	l.wake()
}

// bgTurn waits until a background span of n bytes may be requested: no
// reader of any layer on the link waiting, the quiet period over, and the bytes in flight within
// BackgroundInflight (or none in flight). It then counts the n bytes as in
// flight. It reports false when the layer is closed.
func (l *Layer) bgTurn(n int64) bool {
	for {
		sig := l.link.signal() // before the state it waits on
		l.sigMu.Lock()
		inflight := l.bgInflight
		l.sigMu.Unlock()
		if l.ctx.Err() != nil {
			return false
		}
		if l.link.waiting.Load() > 0 || l.profiled.Load() > 0 || inflight > 0 && inflight+n > l.opts.BackgroundInflight {
			select {
			case <-sig:
			case <-l.ctx.Done():
			}
			continue
		}
		if q := l.opts.BackgroundQuiet; q > 0 {
			since := time.Duration(l.opts.Clock.Now().UnixNano() - max(l.lastOnDemand.Load(), l.link.last.Load()))
			if since < q {
				select {
				case <-l.opts.Clock.After(q - since):
				case <-l.ctx.Done():
				}
				continue
			}
		}
		l.sigMu.Lock()
		l.bgInflight += n
		l.sigMu.Unlock()
		return true
	}
}

// fetchAll fetches every missing chunk that starts before end, in blob
// order, in runs of chunks neither present nor in flight. Prefetch
// (background false) runs 4 requests of up to SpanSize at once. The
// background runs BackgroundConcurrency requests of up to
// BackgroundSpanSize, within BackgroundInflight bytes, each issued only
// when bgTurn allows.
func (l *Layer) fetchAll(end int64, background bool) {
	ids := make([]int, 0, len(l.owner))
	for id := range l.owner {
		if !l.isPresent(id) {
			ids = append(ids, id)
		}
	}
	offset := func(id int) int64 { return l.chunkOf(id).Offset }
	sort.Slice(ids, func(i, j int) bool { return offset(ids[i]) < offset(ids[j]) })
	conc, size := 4, l.opts.SpanSize
	if background {
		conc, size = l.opts.BackgroundConcurrency, l.opts.BackgroundSpanSize
	}
	sem := make(chan struct{}, conc)
	var wg sync.WaitGroup
	defer wg.Wait()
	for len(ids) > 0 && l.ctx.Err() == nil {
		if offset(ids[0]) >= end {
			return
		}
		// the next run as things stand, to wait for its turn; claimed below
		// as things then stand
		skip, n := l.run(ids, end, size)
		ids = ids[skip:]
		if n == 0 {
			continue
		}
		if offset(ids[0]) >= end {
			return
		}
		sem <- struct{}{}
		sp := &span{background: background}
		planned := l.chunkOf(ids[n-1]).End - offset(ids[0])
		if background && !l.bgTurn(planned) {
			<-sem
			return
		}
		mine, _ := l.claim(ids[:n], sp)
		ids = ids[n:]
		if background { // bgTurn counted planned; count what is fetched
			var got int64
			if len(mine) > 0 {
				got = mine[len(mine)-1].chunk.End - mine[0].chunk.Offset
			}
			l.bgRelease(planned - got)
		}
		if len(mine) == 0 {
			<-sem
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			l.fetchSpan(sp, mine)
		}()
	}
}

// run skips the ids at the head that are present or in flight, and returns
// how many it skipped and the length of the run after them: ids neither
// present nor in flight, starting before end, within size bytes of the
// first.
func (l *Layer) run(ids []int, end, size int64) (skip, n int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	taken := func(id int) bool {
		_, ok := l.inflight[id]
		return ok || l.isPresent(id)
	}
	for skip < len(ids) && taken(ids[skip]) {
		skip++
	}
	if skip == len(ids) {
		return skip, 0
	}
	start := l.chunkOf(ids[skip]).Offset
	for n = 1; skip+n < len(ids); n++ {
		c := l.chunkOf(ids[skip+n])
		if c.Offset >= end || c.Offset-start >= size || taken(ids[skip+n]) {
			break
		}
	}
	return skip, n
}
