package remote

import (
	"context"
	"sync"
	"time"

	"github.com/lazysnap/lazysnap/snapshotter"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// containerd prepares an image's layers one after another, each Prepare
// waiting for the one below, so an image of n lazy layers would mount in n
// times the round trips of one (the blob's tail with the footer and TOC,
// sometimes the rest of the TOC). The labels of the first layer list the
// layers above it, though: the warmer reads those layers' tails and TOCs
// at once, in the background, and their Mounts then open them from memory.
// Nothing is verified ahead: the warmer knows the layers' digests but not
// their TOC digests (the manifest has them, and fetching it again would
// cost requests and bytes), so each Mount verifies its TOC against its own
// labels as always. Only layers of images whose labels carry TOC digests
// (converted images) are warmed, or, when the labels carry none
// (zstd:chunked's annotations are never labels), once the Mount has read
// from the manifest that its layer is lazily loadable. A warmed layer that no Mount takes within
// warmTTL (containerd already had its snapshot, say) is dropped; its cost
// was the tail and TOC requests a Mount would have made.
const (
	warmTTL = 2 * time.Minute
	// warmParallel bounds the layers read at once: each is one or two
	// requests (the fetcher's per-host connection limit, 8 by default,
	// applies as well).
	warmParallel = 8
)

// warmer reads layers ahead of their Mount. A nil warmer reads none.
type warmer struct {
	src Source
	ttl time.Duration
	sem chan struct{}
	// spawn runs a read in a goroutine of the FS, with its lifetime
	// context (FS.spawn); false once the FS is closing
	spawn func(func(context.Context)) bool

	mu sync.Mutex
	m  map[digest.Digest]*warmLayer
}

// warmLayer is one layer being (or having been) read ahead.
type warmLayer struct {
	done chan struct{} // closed when b and err are set
	b    Blob
	err  error
	drop *time.Timer // forgets the layer warmTTL after its read; guarded by warmer.mu
}

func newWarmer(src Source, spawn func(func(context.Context)) bool) *warmer {
	return &warmer{src: src, ttl: warmTTL, sem: make(chan struct{}, warmParallel), spawn: spawn, m: map[digest.Digest]*warmLayer{}}
}

// start reads, in the background, the layers src lists besides its own
// that skip does not exclude (mounted or being mounted) and that are not
// being read already.
func (w *warmer) start(src snapshotter.LayerSource, skip func(digest.Digest) bool) {
	if src.TOCDigest == "" {
		return
	}
	w.startAll(src, skip)
}

// startAll is start for a layer whose labels carry no TOC digest but that
// its manifest says is lazily loadable (zstd:chunked): its neighbours
// likely are too.
func (w *warmer) startAll(src snapshotter.LayerSource, skip func(digest.Digest) bool) {
	if w == nil {
		return
	}
	for _, d := range src.Layers {
		if d != src.Digest && !skip(d) {
			w.readAhead(src.Ref, d)
		}
	}
}

// startOwn reads the Mount's own layer ahead, while the Mount reads the
// manifest for what its labels lack (the index digest): the blob's tail
// is then read in parallel rather than one round trip later. forget drops
// it when the layer turns out not to be lazily loadable.
func (w *warmer) startOwn(src snapshotter.LayerSource) {
	if w != nil {
		w.readAhead(src.Ref, src.Digest)
	}
}

// readAhead starts reading layer d unless it is being read already.
func (w *warmer) readAhead(ref string, d digest.Digest) {
	w.mu.Lock()
	_, dup := w.m[d]
	wl := &warmLayer{done: make(chan struct{})}
	if !dup {
		w.m[d] = wl
	}
	w.mu.Unlock()
	if !dup && !w.spawn(func(ctx context.Context) { w.read(ctx, ref, d, wl) }) {
		w.forget(d)
	}
}

// forget drops layer d's read ahead, if any (the read finishes unused).
func (w *warmer) forget(d digest.Digest) {
	if w == nil {
		return
	}
	w.mu.Lock()
	w.remove(d)
	w.mu.Unlock()
}

// remove deletes layer d's entry and stops its timer; w.mu is held.
func (w *warmer) remove(d digest.Digest) {
	if wl := w.m[d]; wl != nil && wl.drop != nil {
		wl.drop.Stop()
	}
	delete(w.m, d)
}

// close forgets every layer read ahead, once the FS's goroutines (the
// reads) have ended.
func (w *warmer) close() {
	w.mu.Lock()
	defer w.mu.Unlock()
	for d := range w.m {
		w.remove(d)
	}
}

// read reads layer d ahead, within ctx (the FS's lifetime) and the TTL.
func (w *warmer) read(ctx context.Context, ref string, d digest.Digest, wl *warmLayer) {
	defer func() {
		w.mu.Lock()
		if w.m[d] == wl {
			wl.drop = time.AfterFunc(w.ttl, func() { w.drop(d, wl) })
		}
		w.mu.Unlock()
	}()
	defer close(wl.done)
	select {
	case w.sem <- struct{}{}:
	case <-ctx.Done():
		wl.err = ctx.Err()
		return
	}
	defer func() { <-w.sem }()
	defer contain(d.String(), nil, &wl.err) // a footer that panics its parser: the Mount reads the layer itself
	ctx, cancel := context.WithTimeout(ctx, w.ttl)
	defer cancel()
	// the labels give the layers' digests, not their media types or
	// formats: the blob is opened with its tail (no format claims it) and
	// extended back to whichever format's index its footer names
	b, err := w.src.Blob(ctx, ref, ocispec.Descriptor{MediaType: unknownMediaType, Digest: d})
	if err == nil {
		if tb, ok := b.(*tailBlob); ok {
			err = tb.extendTail(ctx)
		}
	}
	wl.b, wl.err = b, err
}

// drop forgets wl if it is still the entry for d.
func (w *warmer) drop(d digest.Digest, wl *warmLayer) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.m[d] == wl {
		w.remove(d)
	}
}

// take returns the blob of layer d read ahead, waiting for a read in
// progress. It returns nil when no read was started, it failed (the Mount
// then reads the layer itself and reports its own error), or ctx ended
// first.
func (w *warmer) take(ctx context.Context, d digest.Digest) Blob {
	if w == nil {
		return nil
	}
	w.mu.Lock()
	wl := w.m[d]
	w.remove(d)
	w.mu.Unlock()
	if wl == nil {
		return nil
	}
	select {
	case <-wl.done:
	case <-ctx.Done():
		return nil
	}
	if wl.err != nil {
		return nil
	}
	return wl.b
}
