package remote

import (
	"context"
	"errors"
	"fmt"
	"path"
	"sync"
	"sync/atomic"
	"time"

	"github.com/lazysnap/lazysnap/fs/fetch"
	"github.com/lazysnap/lazysnap/index"
	"github.com/lazysnap/lazysnap/profile"
	"github.com/lazysnap/lazysnap/snapshotter"
	"github.com/opencontainers/go-digest"
)

// ProfileOptions turn on runtime-learned prefetch profiles (see package
// profile): a Mount of an image that has a profile prefetches the layer's
// chunks it lists; an image without one has its start recorded.
type ProfileOptions struct {
	// Store keeps the profiles (usually Root/profiles).
	Store *profile.Store
	// Registry, with Fetch, is asked for a profile the Store lacks; with
	// Publish, receives every profile recorded (needs push rights).
	Registry       profile.Registry
	Fetch, Publish bool
	// NoRecord: profiles are only used, never recorded.
	NoRecord bool
	// Limits bound a recording.
	Limits profile.Limits
	// LookupTimeout bounds the registry lookup of one image (10s).
	LookupTimeout time.Duration
	// OnError, if set, receives failures to look up, store or publish a
	// profile (the mounts go on without it).
	OnError func(key string, err error)
}

// imageProfile is what the FS knows of one image's profile, kept while a
// layer of the image is mounted or being mounted (refs).
type imageProfile struct {
	key    string // in FS.images
	refs   int    // guarded by FS.mu
	once   sync.Once
	p      *profile.Profile
	from   string // "local" or "registry"
	reason string // why no profile is used, when p is nil and one was found
	rec    *profile.Recorder
	looked atomic.Bool // the lookup has ended
}

// layerProfile is a layer's part in its image's profile. A Mount whose
// index is open before its image's profile lookup has ended does not wait
// for it (a registry's referrers and tag schema are a few round trips):
// the layer is pending, the chunks its readers access meanwhile are kept,
// and once the lookup ends (startProfile) they go to the recording, or
// the profile's chunks are prefetched.
type layerProfile struct {
	mu      sync.Mutex
	state   func() string
	chunks  []fetch.ChunkRef
	rec     *profile.RecLayer
	pending bool
	early   []chunkAccess // accessed while pending, at most maxEarlyAccesses
	// done is closed when the profile's prefetch has ended, at once when
	// there is none (startProfile)
	done chan struct{}
}

// chunkAccess is a reader's first access to a chunk.
type chunkAccess struct {
	ino   index.Ino
	chunk int
}

// maxEarlyAccesses bounds the accesses a pending layer keeps.
const maxEarlyAccesses = 1 << 16

// State is what the profile does for the layer (LayerInfo.ProfileState).
func (lp *layerProfile) State() string {
	lp.mu.Lock()
	state := lp.state
	lp.mu.Unlock()
	return state()
}

// access is the layer's fetch.Options.OnChunkAccess: the recording's, or
// kept while the layer is pending.
func (lp *layerProfile) access(ino index.Ino, chunk int) {
	lp.mu.Lock()
	if lp.pending {
		if len(lp.early) < maxEarlyAccesses {
			lp.early = append(lp.early, chunkAccess{ino, chunk})
		}
		lp.mu.Unlock()
		return
	}
	rec := lp.rec
	lp.mu.Unlock()
	if rec != nil {
		rec.Add(uint32(ino), chunk)
	}
}

// settle ends a pending layer with what the lookup decided (d): the
// accesses kept go to its recording, in order.
func (lp *layerProfile) settle(d *layerProfile) {
	lp.mu.Lock()
	defer lp.mu.Unlock()
	lp.state, lp.chunks, lp.rec, lp.pending = d.state, d.chunks, d.rec, false
	if lp.rec != nil {
		for _, a := range lp.early {
			lp.rec.Add(uint32(a.ino), a.chunk)
		}
	}
	lp.early = nil
}

// startProfile starts the layer's part in its image's profile on l, once
// the lookup has ended for a pending layer: the profile's chunks are
// prefetched (PrefetchChunks is called at once for a layer not pending,
// before the layer's own prefetch starts, so that the learned chunks come
// first), and done closed when that has ended.
func (r *FS) startProfile(lp *layerProfile, l *fetch.Layer, img *imageProfile, src snapshotter.LayerSource, indexDigest digest.Digest, idx *index.Index) {
	lp.mu.Lock()
	pending, chunks := lp.pending, lp.chunks
	lp.mu.Unlock()
	var prefetched <-chan struct{}
	if !pending && len(chunks) > 0 {
		prefetched = l.PrefetchChunks(chunks)
	}
	if !r.spawn(func(ctx context.Context) {
		defer close(lp.done)
		if pending {
			r.lookup(img, src)
			lp.settle(r.decideProfile(img, src, indexDigest, idx, lp.done))
			if len(lp.chunks) > 0 {
				prefetched = l.PrefetchChunks(lp.chunks)
			}
		}
		if prefetched != nil {
			select {
			case <-prefetched:
			case <-ctx.Done():
			}
		}
	}) {
		close(lp.done)
	}
}

func (r *FS) profileErr(key string, err error) {
	if o := r.opts.Profiles; o != nil && o.OnError != nil {
		o.OnError(key, err)
	}
}

// holdImage counts a Mount of a layer of src's image, keeping the image's
// profile state until releaseImage; nil when the FS uses no profiles.
func (r *FS) holdImage(src snapshotter.LayerSource) *imageProfile {
	if r.opts.Profiles == nil || r.opts.Profiles.Store == nil {
		return nil
	}
	key := profile.Key(src.Manifest, src.Ref)
	r.mu.Lock()
	defer r.mu.Unlock()
	img, ok := r.images[key]
	if !ok {
		img = &imageProfile{key: key}
		r.images[key] = img
	}
	img.refs++
	return img
}

// releaseImage ends what holdImage counted: the last layer of an image
// forgets the image, ending its recording (stored and published as a
// recording that went quiet is).
func (r *FS) releaseImage(img *imageProfile) {
	if img == nil {
		return
	}
	r.mu.Lock()
	img.refs--
	last := img.refs == 0
	if last {
		delete(r.images, img.key)
	}
	r.mu.Unlock()
	if last && !r.spawn(func(context.Context) { img.end() }) {
		img.end() // Close has begun: it waits for its caller
	}
}

// end ends the image's recording, if it has one, once its lookup is done.
func (img *imageProfile) end() {
	img.once.Do(func() {}) // waits for a lookup in progress
	if img.rec != nil {
		img.rec.Flush()
	}
}

// lookup finds the profile of img, the image src belongs to, once per
// image (a Mount holds it: holdImage): in the Store, else in the
// registry; or starts recording one. The lookup has the FS's lifetime; a
// caller waits for one in progress.
func (r *FS) lookup(img *imageProfile, src snapshotter.LayerSource) {
	o := r.opts.Profiles
	key := img.key
	img.once.Do(func() {
		defer img.looked.Store(true)
		p, err := o.Store.Get(key)
		img.from = "local"
		if errors.Is(err, profile.ErrNotFound) && o.Fetch && o.Registry != nil && src.Manifest != "" {
			timeout := o.LookupTimeout
			if timeout <= 0 {
				timeout = 10 * time.Second
			}
			lctx, cancel := context.WithTimeout(r.ctx, timeout)
			p, err = findProfile(lctx, o.Registry, key, src)
			cancel()
			img.from = "registry"
			if err == nil {
				if perr := o.Store.Put(p); perr != nil {
					r.profileErr(key, perr)
				}
			}
		}
		switch {
		case err == nil && p.Key() != key:
			img.reason = fmt.Sprintf("ignored: the %s profile is for image %s", img.from, p.Key())
		case err == nil:
			img.p = p
			return
		case !errors.Is(err, profile.ErrNotFound):
			img.reason = "ignored: " + err.Error()
			r.profileErr(key, err)
		}
		if !o.NoRecord {
			img.rec = profile.NewRecorder(src.Manifest, src.Ref, o.Limits, func(p *profile.Profile) { r.saveProfile(p) })
		}
	})
}

// findProfile looks up src's profile in the registry (profile.Find), a
// panic of it contained: the image goes on without a profile.
func findProfile(ctx context.Context, reg profile.Registry, key string, src snapshotter.LayerSource) (p *profile.Profile, err error) {
	defer contain(key, nil, &err)
	return profile.Find(ctx, reg, src.Ref, src.Manifest)
}

// saveProfile stores a recorded profile and publishes it when asked to.
func (r *FS) saveProfile(p *profile.Profile) {
	o := r.opts.Profiles
	if err := o.Store.Put(p); err != nil {
		r.profileErr(p.Key(), err)
	}
	if o.Publish && o.Registry != nil && p.Manifest != "" && r.ctx.Err() == nil {
		ctx, cancel := context.WithTimeout(r.ctx, time.Minute)
		defer cancel()
		if _, err := profile.Publish(ctx, o.Registry, p.Ref, p, time.Now()); err != nil {
			r.profileErr(p.Key(), err)
		}
	}
}

// layerProfile returns the layer's part in its image's profile, pending
// when the image's lookup has not ended (startProfile settles it), else
// decided (decideProfile).
func (r *FS) layerProfile(img *imageProfile, src snapshotter.LayerSource, indexDigest digest.Digest, idx *index.Index) *layerProfile {
	if img == nil {
		return nil
	}
	done := make(chan struct{})
	if !img.looked.Load() {
		return &layerProfile{pending: true, state: func() string { return "looking up" }, done: done}
	}
	return r.decideProfile(img, src, indexDigest, idx, done)
}

// decideProfile decides what the profile does for the layer being
// mounted, once the lookup has ended: the chunks to prefetch (every one
// checked against idx), or a recording; done is the layer's
// layerProfile.done.
func (r *FS) decideProfile(img *imageProfile, src snapshotter.LayerSource, indexDigest digest.Digest, idx *index.Index, done chan struct{}) *layerProfile {
	r.lookup(img, src)
	lp := r.decided(img, src, indexDigest, idx, done)
	lp.done = done
	return lp
}

// decided is decideProfile's decision, done aside.
func (r *FS) decided(img *imageProfile, src snapshotter.LayerSource, indexDigest digest.Digest, idx *index.Index, done <-chan struct{}) *layerProfile {
	fixed := func(s string) func() string { return func() string { return s } }
	if img.rec != nil {
		rl := img.rec.Layer(src.Digest, indexDigest, namer(idx))
		rec, reason := img.rec, img.reason
		return &layerProfile{rec: rl, state: func() string {
			s := "recording"
			if rec.Ended() {
				s = "recorded"
			}
			if reason != "" {
				s += " (" + reason + ")"
			}
			return s
		}}
	}
	pl := img.p.Layer(src.Digest)
	if pl == nil {
		return &layerProfile{state: fixed("ignored: layer not in the profile (stale layer set)")}
	}
	if pl.TOC != indexDigest {
		return &layerProfile{state: fixed(fmt.Sprintf("ignored: stale TOC (the profile names %s)", pl.TOC))}
	}
	lp := &layerProfile{}
	for _, c := range pl.ChunkList() {
		ino, ok := idx.LookupPath(c.Path)
		if !ok || !idx.IsRegular(ino) {
			return &layerProfile{state: fixed(fmt.Sprintf("ignored: %s is not a file of the index", c.Path))}
		}
		if c.Index >= idx.NumChunks(ino) {
			return &layerProfile{state: fixed(fmt.Sprintf("ignored: chunk %d of %s is past the index", c.Index, c.Path))}
		}
		lp.chunks = append(lp.chunks, fetch.ChunkRef{Ino: ino, Chunk: c.Index})
	}
	from := img.from
	lp.state = func() string {
		select {
		case <-done:
			return "prefetched from " + from
		default:
			return "prefetching from " + from
		}
	}
	return lp
}

// namer names inodes of idx by walking it (once per layer, at the end of
// a recording).
func namer(idx *index.Index) profile.Namer {
	return func(inos []uint32) map[uint32]string {
		want := make(map[index.Ino]bool, len(inos))
		for _, i := range inos {
			want[index.Ino(i)] = true
		}
		out := make(map[uint32]string, len(inos))
		var walk func(dir index.Ino, prefix string)
		walk = func(dir index.Ino, prefix string) {
			idx.ReadDir(dir, func(name string, ino index.Ino) bool {
				p := path.Join(prefix, name)
				if want[ino] {
					if _, ok := out[uint32(ino)]; !ok {
						out[uint32(ino)] = p
					}
				}
				if idx.IsDir(ino) && ino != dir {
					walk(ino, p)
				}
				return len(out) < len(want)
			})
		}
		walk(index.Root, "")
		return out
	}
}

// FlushProfiles ends every recording now, storing (and publishing) what
// each has; for shutdown, and for tests, which cannot wait for a start to
// go quiet.
func (r *FS) FlushProfiles() {
	r.mu.Lock()
	var recs []*profile.Recorder
	for _, img := range r.images {
		if img.rec != nil {
			recs = append(recs, img.rec)
		}
	}
	r.mu.Unlock()
	for _, rec := range recs {
		rec.Flush()
	}
}
