package fetch

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sort"
	"sync"

	"github.com/lazysnap/lazysnap/index"
)

// predictor remembers which files predictAfter has read to the end, and
// the layer's ld.so.cache once it is present.
type predictor struct {
	mu      sync.Mutex
	done    map[index.Ino]bool // ELF files read in full, or found not to be ELF
	ldc     ldCache
	ldcRead bool

	inflight int   // fetchPredicted calls whose fetches are in flight
	queue    []int // chunk ids predicted meanwhile
}

// maxPredictDepth bounds how far predictAfter follows libraries that are
// present already to their own libraries.
const maxPredictDepth = 8

// ldCachePath is where the loader finds its cache.
const ldCachePath = "/etc/ld.so.cache"

// predictAfter is called when a reader's chunk of ino has been stored by
// an on-demand or predicted fetch, before the reader is woken. If ino is
// an ELF file it claims, for fetches of their own, what the dynamic loader
// reads next: the chunks of ino it still needs to find its libraries (its
// dynamic section and string table), the interpreter and ld.so.cache (an
// executable's), and the first chunk of each library it needs that the
// layer holds. Each of those, once stored, is looked at in turn. Nothing
// is fetched for a file that is not ELF.
//
// Its fetches wait for after, if not nil, to be closed: the end of the
// stream that brought the chunk, so that they take its connection rather
// than open one.
func (l *Layer) predictAfter(ino index.Ino, after <-chan struct{}) {
	l.fetchPredicted(l.predictIDs(ino, 0), after)
}

// storeLook is storeWant, and then, for a reader's or a prediction's chunk,
// a look at what its file says is read next (predictAfter), before the
// reader is woken. after is closed when the request that brought raw has
// ended (nil: it has).
func (l *Layer) storeLook(ctx context.Context, sp *span, w *want, raw []byte, after <-chan struct{}) error {
	err := l.storeWant(ctx, w, raw)
	if err == nil && sp.predict && !w.around {
		l.predictAfter(l.owner[w.id], after)
	}
	return err
}

// predictIDs returns the chunk ids predictAfter(ino) would fetch.
func (l *Layer) predictIDs(ino index.Ino, depth int) []int {
	if l.opts.NoPredict || depth > maxPredictDepth || !l.idx.IsRegular(ino) {
		return nil
	}
	p := &l.pred
	p.mu.Lock()
	done := p.done[ino]
	p.mu.Unlock()
	if done {
		return nil
	}
	if hdr, err := (presentReader{l, ino}).read(0, min(l.idx.Attr(ino).Size, 64)); err == nil && isPyc(hdr) {
		if !l.FilePresent(ino) {
			return nil // looked at again when its last chunk is stored
		}
		p.mu.Lock()
		p.done[ino] = true
		p.mu.Unlock()
		return l.followFiles(l.predictPyc(ino), depth)
	}
	info, err := parseELF(presentReader{l, ino}.read, l.idx.Attr(ino).Size)
	var me *missingErr
	partial := errors.As(err, &me)
	if err == nil || !partial {
		p.mu.Lock()
		p.done[ino] = true
		p.mu.Unlock()
	}
	if err != nil && !partial {
		return nil
	}
	var ids []int
	if partial {
		for _, i := range me.chunks {
			ids = append(ids, l.idx.ChunkID(ino, i))
		}
	}
	var deps []index.Ino
	if info.interp != "" {
		if d, ok := l.resolvePath(ldCachePath); ok {
			deps = append(deps, d)
		}
		deps = append(deps, l.pyStart(ino, &info)...) // an interpreter's start
	}
	var libs []index.Ino // the interpreter and the libraries: mapped whole
	if len(info.needed) > 0 {
		cache := l.ldCache()
		for _, name := range info.needed {
			if d, ok := l.findLibrary(&info, name, cache); ok {
				libs = append(libs, d)
			}
		}
	}
	if info.interp != "" {
		if d, ok := l.resolvePath(info.interp); ok {
			libs = append(libs, d)
		}
	}
	deps = slices.DeleteFunc(append(deps, libs...), func(d index.Ino) bool { return d == ino })
	ids = append(ids, l.followFiles(deps, depth)...)
	for _, d := range libs {
		if d != ino {
			ids = append(ids, l.restIDs(d, maxLibrary)...)
		}
	}
	return ids
}

// maxLibrary bounds the compressed bytes of a library (or interpreter)
// that prediction fetches whole. The loader maps a library and touches
// pages all over it (relocations, the code it runs); in a format whose
// chunks are spans (SOCI), a library of a few spans read a chunk at a
// time is a round trip a span. A larger library's first chunk only is
// predicted (a large library's pages are mostly never touched).
const maxLibrary = 4 << 20

// restIDs returns the chunks of ino after its first that are not present,
// when all of its chunks lie within max compressed bytes of its first;
// none otherwise.
func (l *Layer) restIDs(ino index.Ino, max int64) []int {
	n := l.idx.NumChunks(ino)
	if n < 2 || l.idx.Chunk(ino, n-1).End-l.idx.Chunk(ino, 0).Offset > max {
		return nil
	}
	var ids []int
	for i := 1; i < n; i++ {
		if id := l.idx.ChunkID(ino, i); !l.isPresent(id) {
			ids = append(ids, id)
		}
	}
	return ids
}

// followFiles returns the chunks to fetch of files read next: the first
// chunk of each (all of a small file's), and for one present already
// (read before, or read around), what it says is read after it.
func (l *Layer) followFiles(files []index.Ino, depth int) []int {
	var ids []int
	for _, d := range files {
		n := l.idx.NumChunks(d)
		if n == 0 {
			continue
		}
		first := l.idx.ChunkID(d, 0)
		if !l.isPresent(first) {
			ids = append(ids, first)
			if l.small(d) {
				for i := 1; i < n; i++ {
					ids = append(ids, l.idx.ChunkID(d, i))
				}
			}
			continue
		}
		ids = append(ids, l.predictIDs(d, depth+1)...)
	}
	return ids
}

// maxExecutable bounds the compressed bytes of an executable that a cold
// read of its first chunk fetches whole (wholeExecutable).
const maxExecutable = 16 << 20

// wholeExecutable claims, for sp, the chunks of ino after its first when
// a reader has just claimed the first (mine) and ino is an executable
// file of several chunks: exec maps a program whole, and the loader reads
// its dynamic section, usually in a later chunk, right after, so they
// come in the same request, streamed after the reader's chunk.
func (l *Layer) wholeExecutable(ino index.Ino, mine []want, sp *span) []want {
	if len(mine) == 0 || mine[0].id != l.idx.ChunkID(ino, 0) {
		return nil
	}
	more, _ := l.claim(l.executableRest(ino), sp)
	for _, w := range more {
		l.predicted.Add(1)
		l.predictedBytes.Add(w.chunk.CompressedSize())
	}
	return more
}

// withShared returns ws (claimed for sp) with the chunks that share their
// blob ranges claimed too (claimShared: the other files of a SOCI span,
// stored now rather than fetched again when predicted or read later), in
// blob order.
func (l *Layer) withShared(ws []want, sp *span) []want {
	var shared []want
	for _, w := range ws {
		shared = append(shared, l.claimShared([]want{w}, sp)...)
	}
	if len(shared) == 0 {
		return ws
	}
	ws = append(ws, shared...)
	sort.SliceStable(ws, func(i, j int) bool { return ws[i].chunk.Offset < ws[j].chunk.Offset })
	return ws
}

// executableRest returns the chunks of ino after its first, up to
// maxExecutable compressed bytes from it, when ino is an executable file
// of several chunks (none otherwise, or with prediction off).
func (l *Layer) executableRest(ino index.Ino) []int {
	if l.opts.NoPredict || l.idx.Attr(ino).Mode&0o111 == 0 {
		return nil
	}
	return l.afterFirst(ino)
}

// afterFirst returns the chunks of ino after its first, up to
// maxExecutable compressed bytes from it.
func (l *Layer) afterFirst(ino index.Ino) []int {
	n := l.idx.NumChunks(ino)
	if n < 2 {
		return nil
	}
	first := l.idx.Chunk(ino, 0).Offset
	var ids []int
	for i := 1; i < n && l.idx.Chunk(ino, i).End-first <= maxExecutable; i++ {
		ids = append(ids, l.idx.ChunkID(ino, i))
	}
	return ids
}

// ldCache returns the layer's parsed ld.so.cache once it is present (nil
// before, or when the layer has none).
func (l *Layer) ldCache() ldCache {
	p := &l.pred
	p.mu.Lock()
	if p.ldcRead {
		defer p.mu.Unlock()
		return p.ldc
	}
	p.mu.Unlock()
	ino, ok := l.resolvePath(ldCachePath)
	if !ok {
		p.mu.Lock()
		p.ldcRead = true
		p.mu.Unlock()
		return nil
	}
	size := l.idx.Attr(ino).Size
	if size > maxDynstr || !l.FilePresent(ino) {
		return nil
	}
	b, err := presentReader{l, ino}.read(0, size)
	if err != nil {
		return nil
	}
	c := parseLDCache(b)
	p.mu.Lock()
	defer p.mu.Unlock()
	p.ldc, p.ldcRead = c, true
	return c
}

// MultiRangeReader is implemented by BlobReaders that can fetch several
// ranges in one request (an HTTP multi-range request): out[i] holds
// ranges[i]'s bytes.
type MultiRangeReader interface {
	ReadMultiRange(ctx context.Context, ranges []Range) ([][]byte, error)
}

// Range is a byte range [Off, Off+Len) of a blob.
type Range struct{ Off, Len int64 }

// maxMultiRange bounds the compressed bytes of predicted chunks fetched in
// one multi-range request, which hands over its bytes only once all have
// come. What the loader needs next it needs all of before the program
// runs, so the request is as large as one span of the fetcher (4 MiB);
// larger runs get a streamed request of their own.
const maxMultiRange = 4 << 20

// maxPredictInflight bounds the predicted fetches (fetchPredicted calls)
// in flight: the predictions made while they are are queued and fetched
// together after, unclaimed meanwhile (a reader that needs one of their
// chunks fetches it itself). Each module a program imports names the next
// ones; one request a round of them, not one a module.
const maxPredictInflight = 2

// fetchPredicted claims the chunks of ids that are neither present nor in
// flight and fetches them, at once unless maxPredictInflight predicted
// fetches are in flight: chunks next to each other in the
// blob as one range; ranges up to maxMultiRange together in one
// multi-range request where the BlobReader can (MultiRangeReader), each
// larger one in a request of its own. Their stores look further
// (predictAfter).
func (l *Layer) fetchPredicted(ids []int, after <-chan struct{}) {
	if len(ids) == 0 {
		return
	}
	p := &l.pred
	p.mu.Lock()
	if p.inflight >= maxPredictInflight {
		p.queue = append(p.queue, ids...)
		p.mu.Unlock()
		return
	}
	p.inflight++
	p.mu.Unlock()
	l.predictRound(ids, after)
}

// predictRound fetches ids under one of the maxPredictInflight slots, and
// then, while predictions were queued meanwhile, those under the same
// slot; it gives the slot up when none are left.
func (l *Layer) predictRound(ids []int, after <-chan struct{}) {
	p := &l.pred
	var wg sync.WaitGroup
	l.issuePredicted(ids, &wg, after)
	next := func() {
		wg.Wait()
		p.mu.Lock()
		q := p.queue
		p.queue = nil
		if len(q) == 0 {
			p.inflight--
			p.mu.Unlock()
			return
		}
		p.mu.Unlock()
		l.predictRound(q, nil)
	}
	if !l.spawn(next) {
		p.mu.Lock()
		p.inflight--
		p.mu.Unlock()
	}
}

// predicting reports how many predicted fetches are in flight or queued.
func (l *Layer) predicting() int {
	p := &l.pred
	p.mu.Lock()
	defer p.mu.Unlock()
	n := p.inflight
	if len(p.queue) > 0 {
		n++
	}
	return n
}

// issuePredicted claims and fetches ids as fetchPredicted says, each fetch
// counted in wg.
func (l *Layer) issuePredicted(ids []int, wg *sync.WaitGroup, after <-chan struct{}) {
	sort.Slice(ids, func(i, j int) bool { return l.chunkOf(ids[i]).Offset < l.chunkOf(ids[j]).Offset })
	ids = dedupeSorted(ids)
	run := func(fn func(), ws ...[]want) {
		wg.Add(1)
		if !l.spawn(func() {
			defer wg.Done()
			if after != nil {
				select {
				case <-after:
				case <-l.ctx.Done():
				}
			}
			fn()
		}) {
			wg.Done()
			for _, w := range ws {
				l.failClosed(w)
			}
		}
	}
	var small [][]want // runs for one multi-range request
	var smallBytes int64
	_, multi := l.blob.(MultiRangeReader)
	for len(ids) > 0 {
		n := 1
		for n < len(ids) && (l.chunkOf(ids[n]).Offset == l.chunkOf(ids[n-1]).End || l.chunkOf(ids[n]).Offset == l.chunkOf(ids[n-1]).Offset) {
			n++ // the next chunk in the blob, or another of the same range (a SOCI span's)
		}
		sp := &span{predict: true}
		mine, _ := l.claim(ids[:n], sp)
		ids = ids[n:]
		if len(mine) == 0 {
			continue
		}
		var size int64
		for _, w := range mine {
			size += w.chunk.CompressedSize()
		}
		l.predicted.Add(int64(len(mine)))
		l.predictedBytes.Add(size)
		mine = l.withShared(mine, sp)
		if multi && size <= maxMultiRange && smallBytes+size <= maxMultiRange {
			small = append(small, mine)
			smallBytes += size
			continue
		}
		run(func() { l.fetchSpan(sp, mine) }, mine)
	}
	switch len(small) {
	case 0:
	case 1:
		ws := small[0]
		run(func() { l.fetchSpan(ws[0].c.span, ws) }, ws)
	default:
		run(func() { l.fetchMulti(small) }, small...)
	}
}

// fetchMulti fetches runs of chunks (each run contiguous in the blob) with
// one multi-range request, and stores and completes them.
func (l *Layer) fetchMulti(runs [][]want) {
	ctx, cancel := context.WithTimeout(l.ctx, l.opts.FetchTimeout)
	defer cancel()
	// a run that a read in flight covers, or that entry checks kept, is
	// taken from there once the request is done (on lazysnap's 1 MiB
	// spans, the check of a library's header fetched its span and the
	// prediction of that library asked for it again)
	var ask, held [][]want
	for _, ws := range runs {
		lo, hi := ws[0].chunk.Offset, ws[len(ws)-1].chunk.End
		if l.flights.covering(lo, hi-lo) == nil && l.recent.get(lo, hi-lo) == nil {
			ask = append(ask, ws)
		} else {
			held = append(held, ws)
		}
	}
	runs = ask
	defer func() {
		for _, ws := range held {
			l.fetchSpan(ws[0].c.span, ws)
		}
	}()
	if len(runs) == 0 {
		return
	}
	ranges := make([]Range, len(runs))
	var total int64
	for i, ws := range runs {
		lo, hi := ws[0].chunk.Offset, ws[len(ws)-1].chunk.End
		ranges[i] = Range{lo, hi - lo}
		total += hi - lo
	}
	l.requests.Add(1)
	fs := make([]*rawFlight, len(ranges))
	for i, r := range ranges {
		fs[i] = l.flights.start(r.Off, r.Len)
	}
	out, err := l.blob.(MultiRangeReader).ReadMultiRange(ctx, ranges)
	if err == nil && len(out) != len(ranges) {
		err = fmt.Errorf("%d ranges read, %d asked for", len(out), len(ranges))
	}
	for i := range ranges {
		if err == nil && int64(len(out[i])) != ranges[i].Len {
			err = fmt.Errorf("range %d+%d: got %d bytes", ranges[i].Off, ranges[i].Len, len(out[i]))
		}
	}
	for i, f := range fs {
		if err != nil {
			l.flights.finish(f, nil, err)
			continue
		}
		l.flights.finish(f, out[i], nil)
		l.recent.putSpare(ranges[i].Off, out[i]) // for the entry checks of the files in it, which follow
	}
	if err != nil {
		err = l.fail(&BlobError{fmt.Errorf("fetch: layer %s: reading %d blob ranges: %w", l.opts.Name, len(ranges), err)})
		for _, ws := range runs {
			for k := range ws {
				l.complete(&ws[k], err)
			}
		}
		return
	}
	l.fetched.Add(total)
	for i, ws := range runs {
		sp := ws[0].c.span
		sp.pos.Store(ranges[i].Off + ranges[i].Len)
		for k := range ws {
			w := &ws[k]
			l.complete(w, l.storeLook(ctx, sp, w, out[i][w.chunk.Offset-ranges[i].Off:w.chunk.End-ranges[i].Off], nil))
		}
	}
}

func dedupeSorted(ids []int) []int {
	out := ids[:0]
	for i, id := range ids {
		if i == 0 || id != ids[i-1] {
			out = append(out, id)
		}
	}
	return out
}
