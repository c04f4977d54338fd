package remote

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/containerd/containerd/v2/core/snapshots"
	lfs "github.com/lazysnap/lazysnap/fs"
	"github.com/lazysnap/lazysnap/fs/fetch"
	"github.com/lazysnap/lazysnap/index"
	"github.com/lazysnap/lazysnap/layer"
	"github.com/lazysnap/lazysnap/snapshotter"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// Options configures an FS.
type Options struct {
	// Root holds the layers' verified file contents, under Root/content.
	Root string
	// Layer are the options of every mounted layer; Name, ContentDir and
	// OnError are set per layer. A nil Link is set to one the FS's
	// layers share: each one's background fetch yields to the readers of
	// all.
	Layer fetch.Options
	// OnError, if set, receives every failed read of a mounted layer
	// (the reader sees EIO), with the layer's blob digest, and the panic
	// that made a layer bad (an *fetch.PanicError, with its stack).
	OnError func(layer digest.Digest, err error)
	// OnMount, if set, is called once a layer is mounted.
	OnMount func(LayerInfo)
	// MaxEntries caps the entries of one layer's index (0: the format's
	// default, estargz.DefaultMaxEntries); IndexMemory caps the memory of
	// the indexes of all mounted layers, with their decoders' (nil: no
	// cap), and of a SOCI zTOC while it is decoded. A layer past either
	// falls back (snapshotter.ReasonNotLazy).
	MaxEntries  int
	IndexMemory *index.Budget
	// Profiles, if set, learns and uses prefetch profiles.
	Profiles *ProfileOptions
	// VerifyBlob checks each layer, once every chunk is present, against
	// its blob digest (and its format's BlobChecker), and marks a layer
	// that fails bad: see the package documentation.
	VerifyBlob bool
	// Handover, if set, is the directory of the mounts' open tables,
	// which lets another process adopt the mounts (Handover, Adopt).
	Handover string
	// Pull configures the line-rate pulls of layers that are not lazy
	// (Pull).
	Pull PullOptions
	// Publish, if set, pushes the zTOCs those pulls keep as SOCI indexes
	// for other nodes (PublishOptions); failures show in PullInfo.Published
	// and never fail a pull.
	Publish *PublishOptions
}

// FS mounts layers lazily: the snapshotter's FileSystem (also a
// snapshotter.Usager and snapshotter.Cleaner).
//
// Local state is keyed by what a Mount verified, never by the blob digest
// alone: in lazy mode the blob digest is only a name (the index digest is
// what is checked), so a registry or mirror may serve other bytes under a
// digest another image uses. A layer's verified file contents live under
// Root/content/<blob digest>.<index digest>, and a blob mounted with one
// index refuses a Mount naming another (a blob has exactly one index, so
// one of the two is lying; the refused one falls back to an ordinary
// pull, which containerd verifies against the blob digest). The fetcher's
// chunk cache is keyed by blob digest and range and is not trusted: every
// chunk is verified against the mounting layer's index before it is
// stored or served, and a cached range that fails is invalidated and
// fetched again.
type FS struct {
	src  Source
	opts Options

	// ctx is the FS's lifetime: every background context derives from
	// it, and Close cancels it.
	ctx    context.Context
	cancel context.CancelFunc
	// wg counts the goroutines the FS started (spawn) and the Mounts in
	// progress; Close waits for them.
	wg sync.WaitGroup

	mu       sync.Mutex
	closed   bool                     // Close has begun: no more Mounts or goroutines
	seq      int                      // Mounts so far: orders LayerInfo
	mounted  map[string]*mountedLayer // by mountpoint
	mounting map[layerKey]int         // Mounts in progress: Cleanup spares their content
	warm     *warmer                  // reads ahead the layers above one being mounted
	images   map[string]*imageProfile // by profile key, while a layer of the image is mounted or mounting
	starts   map[string]*imageStart   // by manifest digest (else reference), for startTTL
	ver      *verifier

	pulls     pullLog       // line-rate pulls
	pullSlots chan struct{} // one per pull or spool running: Options.Pull.Concurrency
	spools    *spooler      // blobs downloaded ahead of their Pull
	pubMu     sync.Mutex    // serializes the pushes of Options.Publish
	pub       publisher     // batches them: one per pull of an image
}

var (
	_ snapshotter.FileSystem = (*FS)(nil)
	_ snapshotter.Usager     = (*FS)(nil)
	_ snapshotter.Cleaner    = (*FS)(nil)
)

// layerKey names a layer by what its Mount verifies: the blob digest
// together with the digest of its index (the eStargz TOC digest).
type layerKey struct {
	blob, index digest.Digest
}

// contentName is the content directory of a layer: both digests, each
// algorithm-hex, so that no two keys share a directory.
func (k layerKey) contentName() string {
	return k.blob.Algorithm().String() + "-" + k.blob.Encoded() + "." + k.index.Algorithm().String() + "-" + k.index.Encoded()
}

type mountedLayer struct {
	key    layerKey
	labels map[string]string // what it was mounted with
	ref    string            // the image it was mounted for
	image  *imageProfile     // its image's, held (holdImage); nil without Options.Profiles
	format string
	seq    int
	layer  *fetch.Layer
	mount  *lfs.Mount
	mem    int64 // reserved in Options.IndexMemory
	prof   *layerProfile
	// stopVerify ends the layer's verification (verify.go) and waits for
	// it; nil without Options.VerifyBlob
	stopVerify func()
	// lastErr is the layer's last failed read (its reason, for status)
	lastErr *atomic.Pointer[string]
}

// LayerInfo is one mounted layer.
type LayerInfo struct {
	Mountpoint string
	Digest     digest.Digest // the blob's
	Ref        string        // the image it was mounted for
	Format     string        // Format.Name
	// Seq orders the Mounts (containerd mounts an image's layers bottom
	// up); it restarts with the process.
	Seq   int
	Stats fetch.Stats
	// Verification is where the check of the complete layer against its
	// blob digest stands (Options.VerifyBlob; empty without):
	// "pending" (chunks still missing), "verifying", "verified",
	// "bad: REASON" or "unverified: ERROR" (the blob could not be read;
	// tried again later).
	Verification string
	// LastError is the layer's last failed read, "" if none.
	LastError string
	// ProfileState is what the image's prefetch profile did for the
	// layer: "recording", "recorded", "prefetching from local",
	// "prefetched from registry", "ignored: REASON" (empty without
	// Options.Profiles).
	ProfileState string
}

// New returns an FS reading layers from src. Close stops what it starts.
func New(src Source, opts Options) *FS {
	opts.Pull = opts.Pull.withDefaults()
	if opts.Layer.Link == nil { // the FS's layers share its link to registries
		opts.Layer.Link = fetch.NewLink()
	}
	r := &FS{src: src, opts: opts, mounted: map[string]*mountedLayer{}, mounting: map[layerKey]int{}, images: map[string]*imageProfile{}, starts: map[string]*imageStart{}, ver: newVerifier(opts.Root),
		pullSlots: make(chan struct{}, opts.Pull.Concurrency), spools: newSpooler(opts.Root)}
	r.ctx, r.cancel = context.WithCancel(context.Background())
	r.warm = newWarmer(src, r.spawn)
	return r
}

// spawn runs fn in a goroutine of the FS's (Close waits for it), with the
// FS's lifetime context; it reports false, running nothing, once Close
// has begun.
func (r *FS) spawn(fn func(ctx context.Context)) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return false
	}
	r.wg.Go(func() { fn(r.ctx) })
	return true
}

// enter registers a Mount in progress (Close waits for it), unless Close
// has begun; leave ends it.
func (r *FS) enter() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return ErrClosed
	}
	r.wg.Add(1)
	return nil
}

func (r *FS) leave() { r.wg.Done() }

// Close stops the FS: Mounts from now on fail with ErrClosed, those in
// progress are cancelled, the layers still mounted stop being served as
// Detach leaves them (Unmount them first to unmount them), the recordings
// of prefetch profiles end and are stored (not published), every
// background read (read ahead, profile lookups, verification) and every
// line-rate pull is cancelled, and the blobs downloaded ahead of their
// pulls are removed. It returns once every goroutine the FS started has
// ended.
func (r *FS) Close() error {
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		return nil
	}
	r.closed = true
	r.mu.Unlock()
	r.cancel()
	r.Detach()
	r.wg.Wait() // Mounts and pulls in progress, profile lookups, read ahead, recordings ending
	r.warm.close()
	r.spools.close()
	return nil
}

// Mount mounts the layer named by labels at mountpoint. Errors wrap a
// snapshotter.Reason so that the snapshotter counts fallbacks by cause.
func (r *FS) Mount(ctx context.Context, mountpoint string, labels map[string]string) error {
	return r.mount(ctx, mountpoint, labels, func(l *fetch.Layer) (*lfs.Mount, error) {
		if r.opts.Handover == "" {
			return lfs.MountLayer(l, mountpoint)
		}
		if err := os.MkdirAll(r.opts.Handover, 0o700); err != nil {
			return nil, err
		}
		return lfs.MountShared(l, mountpoint, openTablePath(r.opts.Handover, mountpoint))
	})
}

// mount prepares the layer named by labels and serves it at mountpoint
// with attach.
func (r *FS) mount(ctx context.Context, mountpoint string, labels map[string]string, attach func(*fetch.Layer) (*lfs.Mount, error)) (err error) {
	src, err := snapshotter.ParseLayerSource(labels)
	if err != nil {
		return err
	}
	defer contain(src.Digest.String(), snapshotter.ReasonNotLazy, &err) // a format's Open that panics
	if err := r.enter(); err != nil {
		return err
	}
	defer r.leave()
	// the Mount ends with ctx (a Prepare request's) or with the FS
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	defer context.AfterFunc(r.ctx, cancel)()
	dg := src.Digest
	var (
		claims      []claim
		indexDigest digest.Digest
		mounted     bool
	)
	r.warm.start(src, r.busy)
	img := r.holdImage(src)
	defer func() {
		if !mounted {
			r.releaseImage(img)
		}
	}()
	if img != nil {
		// the image's profile lookup (a registry round trip or two the
		// first time) overlaps the blob's open; a layer mounted before it
		// ends is pending until it does (layerProfile)
		r.spawn(func(context.Context) { r.lookup(img, src) })
	}
	if src.TOCDigest == "" && !r.busy(dg) {
		r.warm.startOwn(src) // in parallel with the manifest's round trips
	}
	desc, err := r.descriptor(ctx, src)
	var localZtoc []byte // the zTOC a line-rate pull of the layer left
	if err == nil {
		desc, localZtoc = r.localZtoc(desc)
		claims, err = pickFormat(desc, r.opts.MaxEntries, r.opts.IndexMemory)
	}
	if err != nil {
		if src.TOCDigest == "" {
			r.warm.forget(dg)
		}
		return err
	}
	if src.TOCDigest == "" { // the manifest said the layer is lazy: so are its neighbours, likely
		r.warm.startAll(src, r.busy)
	}
	var start *imageStart
	if claims[0].f.Name() != "soci" { // a SOCI layer predicts nothing (below)
		start = r.startOf(src) // its lookup overlaps the blob's open
	}
	indexDigest = claims[0].d
	key := layerKey{blob: dg, index: indexDigest}
	if bl, bad := r.ver.badMark(key); bad {
		return fmt.Errorf("%w: layer %s was found bad at %s: %s", snapshotter.ReasonVerification, dg, bl.Time.Format(time.RFC3339), bl.Reason)
	}
	if err := r.claim(key); err != nil {
		return err
	}
	defer r.release(key)
	b := r.warm.take(ctx, dg)
	if b == nil {
		// ctx is the Prepare request's; the blob outlives it, not the FS
		if b, err = r.src.Blob(r.ctx, src.Ref, desc); err != nil {
			return fmt.Errorf("layer %s: %w", dg, err)
		}
	}
	if tb, ok := b.(*tailBlob); ok && localZtoc != nil {
		tb.setArtifact(claims[0].d, localZtoc)
	}
	idx, dec, format, err := openIndex(ctx, b, claims)
	if tb, ok := b.(*tailBlob); ok {
		tb.trimTail(mountTailSize) // Open has read the index
	}
	if localZtoc != nil {
		format += " (local zTOC)"
	}
	if err != nil {
		return fmt.Errorf("layer %s: %w", dg, fallbackReason(err))
	}
	mem := int64(idx.MemoryBytes())
	if ms, ok := dec.(layer.MemorySized); ok {
		mem += int64(ms.MemoryBytes())
	}
	if err := r.opts.IndexMemory.Reserve(mem); err != nil {
		return fmt.Errorf("%w: layer %s: %w", snapshotter.ReasonNotLazy, dg, err)
	}
	defer func() {
		if !mounted {
			r.opts.IndexMemory.Release(mem)
		}
	}()
	opts := r.opts.Layer
	opts.Name, opts.Decoder, opts.ContentDir = dg.String(), dec, filepath.Join(r.opts.Root, "content", key.contentName(), "files")
	lastErr := new(atomic.Pointer[string])
	opts.OnError = func(err error) {
		msg := err.Error()
		lastErr.Store(&msg)
		if errors.Is(err, fetch.ErrPanic) {
			r.ver.markIndexBad(key, err.Error())
		}
		if errors.Is(err, layer.ErrMismatch) {
			r.ver.markIndexBad(key, fmt.Sprintf("the layer does not match its index %s: %v", key.index, err))
		}
		if r.opts.OnError != nil {
			r.opts.OnError(dg, err)
		}
	}
	prof := r.layerProfile(img, src, indexDigest, idx)
	if prof != nil {
		opts.OnChunkAccess = prof.access
	}
	l, err := fetch.NewLayer(idx, b, opts)
	if err != nil {
		return err
	}
	if prof != nil {
		r.startProfile(prof, l, img, src, indexDigest, idx) // learned first, then the prioritized files
	}
	l.Start() // prefetch need not wait for the FUSE mount
	r.predictStart(start, l)
	m, err := attach(l)
	if err != nil {
		l.Close()
		return err
	}
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		m.Detach()
		l.Close()
		return ErrClosed
	}
	r.seq++
	ml := &mountedLayer{key: key, labels: labels, ref: src.Ref, image: img, format: format, seq: r.seq, layer: l, mount: m, mem: mem, prof: prof, lastErr: lastErr}
	if r.opts.VerifyBlob {
		vctx, cancel := context.WithCancel(r.ctx)
		done := make(chan struct{})
		go func() {
			defer close(done)
			r.ver.watch(vctx, key, l, b, dec)
		}()
		ml.stopVerify = func() { cancel(); <-done }
	}
	r.mounted[mountpoint] = ml
	r.mu.Unlock()
	mounted = true
	if r.opts.OnMount != nil {
		r.opts.OnMount(r.info(mountpoint, ml))
	}
	return nil
}

func (r *FS) info(mountpoint string, ml *mountedLayer) LayerInfo {
	li := LayerInfo{Mountpoint: mountpoint, Digest: ml.key.blob, Ref: ml.ref, Format: ml.format, Seq: ml.seq, Stats: ml.layer.Stats()}
	if ml.prof != nil {
		li.ProfileState = ml.prof.State()
	}
	if s := r.ver.stateOf(ml.key); ml.stopVerify != nil || isBad(s) {
		li.Verification = s // bad also without Options.VerifyBlob: a panic
	}
	if e := ml.lastErr.Load(); e != nil {
		li.LastError = *e
	}
	return li
}

// claim registers a Mount of key in progress, or refuses it when the blob
// is mounted, or being mounted, with another index.
func (r *FS) claim(key layerKey) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	other := func(k layerKey) error {
		if k.blob == key.blob && k.index != key.index {
			return fmt.Errorf("%w: layer %s: this image names TOC %s, but the blob is mounted with TOC %s; a blob has one TOC, so one of the two images' registries serves other bytes under this digest",
				snapshotter.ReasonVerification, key.blob, key.index, k.index)
		}
		return nil
	}
	for k := range r.mounting {
		if err := other(k); err != nil {
			return err
		}
	}
	for _, ml := range r.mounted {
		if err := other(ml.key); err != nil {
			return err
		}
	}
	r.mounting[key]++
	return nil
}

// release ends a Mount in progress that claim registered.
func (r *FS) release(key layerKey) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.mounting[key]--; r.mounting[key] <= 0 {
		delete(r.mounting, key)
	}
}

// busy reports whether a layer of blob dg is mounted or being mounted.
func (r *FS) busy(dg digest.Digest) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	for k := range r.mounting {
		if k.blob == dg {
			return true
		}
	}
	for _, ml := range r.mounted {
		if ml.key.blob == dg {
			return true
		}
	}
	return false
}

// descriptor returns the layer's descriptor: from the labels when they
// carry what a format needs (containerd passes the manifest's
// containerd.io/snapshot/ annotations, the eStargz TOC digest among them),
// else from the manifest in the registry.
func (r *FS) descriptor(ctx context.Context, src snapshotter.LayerSource) (ocispec.Descriptor, error) {
	if d, ok := descriptorFromLabels(src); ok {
		return d, nil
	}
	desc, err := r.src.Layer(ctx, src.Ref, src.Digest)
	if err != nil {
		return desc, fmt.Errorf("layer %s of %s: %w", src.Digest, src.Ref, err)
	}
	return desc, nil
}

// removingPrefix names content directories being removed.
const removingPrefix = ".removing-"

// Cleanup removes the content directories (the verified file contents) of
// the layers that are neither mounted nor being mounted: what the
// snapshots of removed images leave. Each is renamed away under the lock,
// so that a later Mount of the layer starts afresh, and removed after; a
// crash in between leaves a name the next Cleanup removes.
func (r *FS) Cleanup(ctx context.Context) error {
	dir := filepath.Join(r.opts.Root, "content")
	ents, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		return r.spools.cleanup()
	}
	if err != nil {
		return err
	}
	var (
		errs  []error
		trash []string
	)
	r.mu.Lock()
	used := map[string]bool{}
	for _, ml := range r.mounted {
		used[ml.key.contentName()] = true
	}
	for k := range r.mounting {
		used[k.contentName()] = true
	}
	for _, e := range ents {
		name := e.Name()
		switch {
		case strings.HasPrefix(name, removingPrefix):
			trash = append(trash, filepath.Join(dir, name))
		case !used[name]:
			t := filepath.Join(dir, removingPrefix+name)
			if err := os.Rename(filepath.Join(dir, name), t); err != nil {
				errs = append(errs, err)
				continue
			}
			trash = append(trash, t)
		}
	}
	r.mu.Unlock()
	for _, t := range trash {
		if err := os.RemoveAll(t); err != nil {
			errs = append(errs, err)
		}
	}
	if err := r.spools.cleanup(); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// Check reports whether the layer at mountpoint is still served.
func (r *FS) Check(ctx context.Context, mountpoint string, labels map[string]string) error {
	r.mu.Lock()
	ml, ok := r.mounted[mountpoint]
	r.mu.Unlock()
	if !ok {
		return fmt.Errorf("%w at %s", ErrNotMounted, mountpoint)
	}
	var st syscall.Statfs_t
	if err := syscall.Statfs(mountpoint, &st); err != nil {
		return fmt.Errorf("layer %s: %w", ml.key.blob, err)
	}
	return nil
}

// Unmount unmounts the layer at mountpoint.
func (r *FS) Unmount(ctx context.Context, mountpoint string) error {
	r.mu.Lock()
	ml, ok := r.mounted[mountpoint]
	delete(r.mounted, mountpoint)
	r.mu.Unlock()
	if !ok {
		// not ours (any more): make sure nothing stays mounted there
		if err := syscall.Unmount(mountpoint, syscall.MNT_DETACH); err != nil && !errors.Is(err, syscall.EINVAL) && !errors.Is(err, syscall.ENOENT) {
			return err
		}
		return nil
	}
	return r.stop(ml, false)
}

// stop ends a layer taken out of r.mounted: unmounted, or with detach
// only no longer served (Detach). The last layer of its blob takes its
// verification state with it, the last of its image the image's profile
// state.
func (r *FS) stop(ml *mountedLayer, detach bool) error {
	if ml.stopVerify != nil {
		ml.stopVerify() // with detach, the adopter verifies the layer anew
	}
	var err error
	if detach {
		ml.mount.Detach()
	} else {
		err = ml.mount.Unmount()
	}
	ml.layer.Close()
	r.opts.IndexMemory.Release(ml.mem)
	r.mu.Lock()
	last := true
	for _, o := range r.mounted {
		last = last && o.key != ml.key
	}
	if last {
		r.ver.forget(ml.key)
	}
	r.mu.Unlock()
	r.releaseImage(ml.image)
	return err
}

// Layers lists the mounted layers with their counters, in Mount order.
func (r *FS) Layers() []LayerInfo {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]LayerInfo, 0, len(r.mounted))
	for mp, ml := range r.mounted {
		out = append(out, r.info(mp, ml))
	}
	slices.SortFunc(out, func(a, b LayerInfo) int {
		return cmp.Or(cmp.Compare(a.Seq, b.Seq), cmp.Compare(a.Mountpoint, b.Mountpoint))
	})
	return out
}

// BadLayers lists the blobs verification marked bad (Options.Root/verify/bad),
// which new Mounts refuse.
func (r *FS) BadLayers() []BadLayer { return r.ver.badLayers() }

// VerifyStats counts the verifications since New.
func (r *FS) VerifyStats() VerifyStats { return r.ver.stats() }

// Usage reports the local disk a mounted layer takes: its verified file
// contents (the compressed chunk cache is shared between layers and is
// reported by the cache metrics instead).
func (r *FS) Usage(ctx context.Context, mountpoint string) (snapshots.Usage, error) {
	r.mu.Lock()
	ml, ok := r.mounted[mountpoint]
	r.mu.Unlock()
	if !ok {
		return snapshots.Usage{}, fmt.Errorf("%w at %s", ErrNotMounted, mountpoint)
	}
	var u snapshots.Usage
	dir := filepath.Join(r.opts.Root, "content", ml.key.contentName(), "files")
	err := filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		var st syscall.Stat_t
		if err := syscall.Lstat(p, &st); err != nil {
			return err
		}
		u.Inodes++
		u.Size += st.Blocks * 512 // allocated, not apparent: content files are sparse
		return nil
	})
	if errors.Is(err, os.ErrNotExist) {
		err = nil
	}
	return u, err
}
