package fetch

import (
	"sort"
	"sync"
	"sync/atomic"

	"github.com/lazysnap/lazysnap/index"
)

// ChunkRef names one chunk of a layer: a file and the index of the chunk
// in it.
type ChunkRef struct {
	Ino   index.Ino
	Chunk int
}

// maxPrefetchGap is the largest run of unwanted compressed bytes that
// PrefetchChunks fetches to join two wanted ranges into one request: at
// 100 Mbit/s about 20 ms, the round trip a second request would cost.
const maxPrefetchGap = 256 << 10

// NoteAccess calls Options.OnChunkAccess once for each chunk of [from, to]
// of ino that no reader has needed before.
func (l *Layer) NoteAccess(ino index.Ino, from, to int) {
	if l.accessed == nil {
		return
	}
	for i := from; i <= to; i++ {
		id := l.idx.ChunkID(ino, i)
		w := &l.accessed[id/64]
		for {
			old := w.Load()
			if old&(1<<(id%64)) != 0 {
				break
			}
			if w.CompareAndSwap(old, old|1<<(id%64)) {
				l.opts.OnChunkAccess(ino, i)
				break
			}
		}
	}
}

// newAccessed returns the bitmap noteAccess keeps, nil when nobody listens.
func newAccessed(opts Options, n int) []atomic.Uint64 {
	if opts.OnChunkAccess == nil {
		return nil
	}
	return make([]atomic.Uint64, (n+63)/64)
}

// PrefetchChunks fetches the given chunks that are missing (a learned
// profile), in as few requests as possible: sorted by blob offset, ranges
// at most maxPrefetchGap apart joined, each request at most SpanSize. It
// returns at once; done is closed when every request has ended (errors go
// to Options.OnError, as for prefetch). Chunks out of range are skipped:
// the caller validates them against the index first. It must not be
// called after Close.
func (l *Layer) PrefetchChunks(chunks []ChunkRef) (done <-chan struct{}) {
	ch := make(chan struct{})
	var ids []int
	for _, c := range chunks {
		if int(c.Ino) < l.idx.Len() && c.Chunk >= 0 && c.Chunk < l.idx.NumChunks(c.Ino) {
			ids = append(ids, l.idx.ChunkID(c.Ino, c.Chunk))
		}
	}
	chunk := func(id int) (off, end int64) {
		ino := l.owner[id]
		c := l.idx.Chunk(ino, id-l.idx.ChunkID(ino, 0))
		return c.Offset, c.End
	}
	sort.Slice(ids, func(i, j int) bool { a, _ := chunk(ids[i]); b, _ := chunk(ids[j]); return a < b })
	// the requests: runs of chunks at most maxPrefetchGap apart, each at
	// most SpanSize, claimed at once so that readers wait for them
	type request struct {
		sp *span
		ws []want
	}
	var reqs []request
	for len(ids) > 0 {
		start, hi := chunk(ids[0])
		n := 1
		for ; n < len(ids); n++ {
			off, end := chunk(ids[n])
			if off-hi > maxPrefetchGap || end-start > l.opts.SpanSize {
				break
			}
			hi = max(hi, end)
		}
		sp := &span{}
		if mine, _ := l.claim(ids[:n], sp); len(mine) > 0 {
			reqs = append(reqs, request{sp, mine})
		}
		ids = ids[n:]
	}
	// the background yields to a profile's prefetch as to readers: it
	// fetches what the start is about to read
	l.profiled.Add(1)
	l.wg.Add(1)
	go func() {
		defer l.wg.Done()
		defer close(ch)
		defer func() {
			l.lastOnDemand.Store(l.opts.Clock.Now().UnixNano())
			l.profiled.Add(-1)
			l.wake()
		}()
		var wg sync.WaitGroup
		sem := make(chan struct{}, 4)
		for _, r := range reqs {
			sem <- struct{}{}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer func() { <-sem }()
				l.fetchSpan(r.sp, r.ws)
			}()
		}
		wg.Wait()
	}()
	return ch
}
