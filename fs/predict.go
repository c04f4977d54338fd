package fs

import (
	"context"
	"errors"
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
func (l *Layer) predictAfter(ino index.Ino) {
	l.fetchPredicted(l.predictIDs(ino, 0))
}

// storeLook is storeWant, and then, for a reader's or a prediction's chunk,
// a look at what its file says is read next (predictAfter), before the
// reader is woken.
func (l *Layer) storeLook(ctx context.Context, sp *span, w *want, raw []byte) error {
	err := l.storeWant(ctx, w, raw)
	if err == nil && sp.predict && !w.around {
		l.predictAfter(l.owner[w.id])
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
	info, err := parseELF(presentReader{l, ino})
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
		if d, ok := l.resolvePath(info.interp); ok {
			deps = append(deps, d)
		}
		if d, ok := l.resolvePath(ldCachePath); ok {
			deps = append(deps, d)
		}
	}
	if len(info.needed) > 0 {
		cache := l.ldCache()
		for _, name := range info.needed {
			if d, ok := l.findLibrary(&info, name, cache); ok {
				deps = append(deps, d)
			}
		}
	}
	for _, d := range deps {
		if d == ino || l.idx.NumChunks(d) == 0 {
			continue
		}
		first := l.idx.ChunkID(d, 0)
		if !l.isPresent(first) {
			ids = append(ids, first)
			continue
		}
		// present already (read before, or read around): what it needs may
		// not be
		ids = append(ids, l.predictIDs(d, depth+1)...)
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
	if size > maxDynstr || !l.filePresent(ino) {
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

// fetchPredicted claims the chunks of ids that are neither present nor in
// flight and fetches them: chunks next to each other in the blob in one
// request, each run apart in its own, all at once. Their stores look
// further (predictAfter).
func (l *Layer) fetchPredicted(ids []int) {
	if len(ids) == 0 {
		return
	}
	sort.Slice(ids, func(i, j int) bool { return l.chunkOf(ids[i]).Offset < l.chunkOf(ids[j]).Offset })
	ids = dedupeSorted(ids)
	for len(ids) > 0 {
		n := 1
		for n < len(ids) && l.chunkOf(ids[n]).Offset == l.chunkOf(ids[n-1]).End {
			n++
		}
		sp := &span{predict: true}
		mine, _ := l.claim(ids[:n], sp)
		ids = ids[n:]
		if len(mine) == 0 {
			continue
		}
		for _, w := range mine {
			l.predicted.Add(1)
			l.predictedBytes.Add(w.chunk.CompressedSize())
		}
		if !l.spawn(func() { l.fetchSpan(sp, mine) }) {
			l.failClosed(mine)
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
