package main

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/lazysnap/lazysnap/estargz"
	"github.com/lazysnap/lazysnap/snapshotter"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// containerd prepares an image's layers one after another, each Prepare
// waiting for the one below, so an image of n lazy layers would mount in n
// times the round trips of one (the blob's tail with the footer and TOC,
// sometimes the rest of the TOC). The labels of the first layer list the
// layers above it, though: the warmer opens those at once, in the
// background, and their Mounts then find the tail and the verified TOC in
// memory. A warmed layer that no Mount takes within warmTTL (containerd
// already had its snapshot, say) is dropped; its cost was the tail and TOC
// requests a Mount would have made.
const (
	warmTTL = 2 * time.Minute
	// warmParallel bounds the layers opened at once: each is one or two
	// small requests (the fetcher's per-host connection limit, 8 by
	// default, applies as well). 8 against 4: 162 against 175 ms for the
	// 8 layers of BenchmarkMountImageWAN.
	warmParallel = 8
)

// warmer opens layers ahead of their Mount. A nil warmer opens none.
type warmer struct {
	src layerSource
	ttl time.Duration
	sem chan struct{}

	mu sync.Mutex
	m  map[digest.Digest]*warmLayer
}

// warmLayer is one layer being (or having been) opened ahead.
type warmLayer struct {
	done chan struct{} // closed when the fields below are set
	desc ocispec.Descriptor
	b    blob
	er   *estargz.Reader
	err  error
}

func newWarmer(src layerSource) *warmer {
	return &warmer{src: src, ttl: warmTTL, sem: make(chan struct{}, warmParallel), m: map[digest.Digest]*warmLayer{}}
}

// start opens, in the background, the layers src lists besides its own
// that skip does not exclude (mounted or being mounted) and that are not
// warming already.
func (w *warmer) start(src snapshotter.LayerSource, skip func(digest.Digest) bool) {
	if w == nil {
		return
	}
	for _, d := range src.Layers {
		if d == src.Digest || skip(d) {
			continue
		}
		w.mu.Lock()
		_, dup := w.m[d]
		wl := &warmLayer{done: make(chan struct{})}
		if !dup {
			w.m[d] = wl
		}
		w.mu.Unlock()
		if !dup {
			go w.open(src.Ref, d, wl)
		}
	}
}

func (w *warmer) open(ref string, d digest.Digest, wl *warmLayer) {
	defer time.AfterFunc(w.ttl, func() { w.drop(d, wl) })
	defer close(wl.done)
	w.sem <- struct{}{}
	defer func() { <-w.sem }()
	ctx, cancel := context.WithTimeout(context.Background(), w.ttl)
	defer cancel()
	if wl.desc, wl.err = w.src.Layer(ctx, ref, d); wl.err != nil {
		return
	}
	toc := digest.Digest(wl.desc.Annotations[estargz.TOCJSONDigestAnnotation])
	if toc == "" {
		wl.err = fmt.Errorf("layer %s has no TOC digest", d)
		return
	}
	wl.b, wl.er, wl.err = openLayer(ctx, w.src, ref, wl.desc, toc)
}

// drop forgets wl if it is still the entry for d.
func (w *warmer) drop(d digest.Digest, wl *warmLayer) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.m[d] == wl {
		delete(w.m, d)
	}
}

// take returns layer d opened ahead, waiting for an open in progress, with
// a TOC verified against toc when toc is set. It returns nil when no open
// was started, it failed (the Mount then opens the layer itself and
// reports its own error), or ctx ended first.
func (w *warmer) take(ctx context.Context, d, toc digest.Digest) *warmLayer {
	if w == nil {
		return nil
	}
	w.mu.Lock()
	wl := w.m[d]
	delete(w.m, d)
	w.mu.Unlock()
	if wl == nil {
		return nil
	}
	select {
	case <-wl.done:
	case <-ctx.Done():
		return nil
	}
	if wl.err != nil || (toc != "" && digest.Digest(wl.desc.Annotations[estargz.TOCJSONDigestAnnotation]) != toc) {
		return nil
	}
	return wl
}
