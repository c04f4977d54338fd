package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"

	"github.com/containerd/containerd/snapshots"
	"github.com/lazysnap/lazysnap/estargz"
	lfs "github.com/lazysnap/lazysnap/fs"
	"github.com/lazysnap/lazysnap/index"
	"github.com/lazysnap/lazysnap/snapshotter"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// blob is a layer blob from the fetcher.
type blob interface {
	lfs.BlobReader
	io.ReaderAt
	Size() int64
}

// layerSource is what remoteFS needs from the fetcher.
type layerSource interface {
	// Layer finds the layer's descriptor, with its annotations, in the
	// image ref names.
	Layer(ctx context.Context, ref string, layer digest.Digest) (ocispec.Descriptor, error)
	// Blob opens the layer blob for range reads.
	Blob(ctx context.Context, ref string, desc ocispec.Descriptor) (blob, error)
}

// remoteFS mounts eStargz layers: the snapshotter's FileSystem.
//
// Local state is keyed by what a Mount verified, never by the blob digest
// alone: in lazy mode the blob digest is only a name (the TOC digest is
// what is checked), so a registry or mirror may serve other bytes under a
// digest another image uses. A layer's verified file contents live under
// root/content/<contentName(blob, TOC)>, and a blob mounted with one TOC
// refuses a Mount naming another (a blob has exactly one TOC, so one of
// the two is lying; the refused one falls back to an ordinary pull, which
// containerd verifies against the blob digest). The fetcher's chunk cache
// is keyed by blob digest and range and is not trusted: every chunk is
// verified against the mounting layer's TOC before it is stored or served,
// and a cached range that fails is invalidated and fetched again.
type remoteFS struct {
	src      layerSource
	root     string // content directories live under root/content
	opts     lfs.Options
	log      *slog.Logger
	mu       sync.Mutex
	mounted  map[string]*mountedLayer // by mountpoint
	mounting map[layerKey]int         // Mounts in progress: Cleanup spares their content
	warm     *warmer                  // reads ahead the layers above one being mounted
}

// layerKey names a layer by what its Mount verifies: the blob digest
// together with the TOC digest.
type layerKey struct {
	blob, toc digest.Digest
}

// contentName is the content directory of a layer: both digests, each
// algorithm-hex, so that no two keys share a directory.
func (k layerKey) contentName() string {
	return k.blob.Algorithm().String() + "-" + k.blob.Encoded() + "." + k.toc.Algorithm().String() + "-" + k.toc.Encoded()
}

type mountedLayer struct {
	key   layerKey
	ref   string // the image it was mounted for
	layer *lfs.Layer
	mount *lfs.Mount
}

func newRemoteFS(src layerSource, root string, opts lfs.Options, log *slog.Logger) *remoteFS {
	return &remoteFS{src: src, root: root, opts: opts, log: log, mounted: map[string]*mountedLayer{}, mounting: map[layerKey]int{}, warm: newWarmer(src)}
}

// Mount mounts the layer named by labels at mountpoint. Errors wrap a
// snapshotter.Reason so that the snapshotter counts fallbacks by cause.
func (r *remoteFS) Mount(ctx context.Context, mountpoint string, labels map[string]string) error {
	src, err := snapshotter.ParseLayerSource(labels)
	if err != nil {
		return err
	}
	// ctx is the Prepare request's: what outlives Mount must not use it
	bg := context.WithoutCancel(ctx)
	dg := src.Digest
	r.warm.start(src, r.busy)
	desc, err := r.descriptor(ctx, src)
	if err != nil {
		return err
	}
	key := layerKey{blob: dg, toc: digest.Digest(desc.Annotations[estargz.TOCJSONDigestAnnotation])}
	if err := r.claim(key); err != nil {
		return err
	}
	defer r.release(key)
	contentDir := filepath.Join(r.root, "content", key.contentName())
	b, er, err := r.open(ctx, src, desc)
	if err != nil {
		return err
	}
	idx, err := index.Build(er.TOC())
	if err != nil {
		return fmt.Errorf("%w: layer %s: %w", snapshotter.ReasonNotLazy, dg, err)
	}
	opts := r.opts
	opts.Name, opts.ContentDir = dg.String(), filepath.Join(contentDir, "files")
	opts.OnError = func(err error) { r.log.ErrorContext(bg, "layer read failed", "layer", dg, "error", err) }
	l, err := lfs.NewLayer(idx, b, opts)
	if err != nil {
		return err
	}
	l.Start() // prefetch need not wait for the FUSE mount
	m, err := l.Mount(mountpoint)
	if err != nil {
		l.Close()
		return err
	}
	r.mu.Lock()
	r.mounted[mountpoint] = &mountedLayer{key: key, ref: src.Ref, layer: l, mount: m}
	r.mu.Unlock()
	r.log.InfoContext(ctx, "layer mounted lazily", "layer", dg, "ref", src.Ref, "inodes", idx.Len(), "mountpoint", mountpoint)
	return nil
}

// open opens the layer's blob, the warmer's when it read the layer ahead,
// and its TOC, verified against the TOC digest of desc.
func (r *remoteFS) open(ctx context.Context, src snapshotter.LayerSource, desc ocispec.Descriptor) (blob, *estargz.Reader, error) {
	dg := src.Digest
	toc := digest.Digest(desc.Annotations[estargz.TOCJSONDigestAnnotation])
	b := r.warm.take(ctx, dg)
	if b == nil {
		var err error
		// ctx is the Prepare request's; the blob outlives it
		if b, err = r.src.Blob(context.WithoutCancel(ctx), src.Ref, desc); err != nil {
			return nil, nil, fmt.Errorf("layer %s: %w", dg, err)
		}
	}
	er, err := openBlob(b, toc)
	switch {
	case errors.Is(err, estargz.ErrVerify):
		return nil, nil, fmt.Errorf("%w: layer %s: %w", snapshotter.ReasonVerification, dg, err)
	case errors.Is(err, estargz.ErrFormat) || errors.Is(err, estargz.ErrTooLarge):
		return nil, nil, fmt.Errorf("%w: layer %s: %w", snapshotter.ReasonNotLazy, dg, err)
	case err != nil:
		return nil, nil, fmt.Errorf("layer %s: %w", dg, err)
	}
	return b, er, nil
}

// claim registers a Mount of key in progress, or refuses it when the blob
// is mounted, or being mounted, with another TOC.
func (r *remoteFS) claim(key layerKey) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	other := func(k layerKey) error {
		if k.blob == key.blob && k.toc != key.toc {
			return fmt.Errorf("%w: layer %s: this image names TOC %s, but the blob is mounted with TOC %s; a blob has one TOC, so one of the two images' registries serves other bytes under this digest",
				snapshotter.ReasonVerification, key.blob, key.toc, k.toc)
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
func (r *remoteFS) release(key layerKey) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.mounting[key]--; r.mounting[key] <= 0 {
		delete(r.mounting, key)
	}
}

// busy reports whether a layer of blob dg is mounted or being mounted.
func (r *remoteFS) busy(dg digest.Digest) bool {
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

// descriptor returns the layer's descriptor with its TOC digest: from the
// labels (containerd passes the manifest's annotation), else from the
// manifest in the registry.
func (r *remoteFS) descriptor(ctx context.Context, src snapshotter.LayerSource) (ocispec.Descriptor, error) {
	if src.TOCDigest != "" {
		return ocispec.Descriptor{MediaType: ocispec.MediaTypeImageLayerGzip, Digest: src.Digest,
			Annotations: map[string]string{estargz.TOCJSONDigestAnnotation: src.TOCDigest.String()}}, nil
	}
	desc, err := r.src.Layer(ctx, src.Ref, src.Digest)
	if err != nil {
		return desc, fmt.Errorf("layer %s of %s: %w", src.Digest, src.Ref, err)
	}
	toc, err := digest.Parse(desc.Annotations[estargz.TOCJSONDigestAnnotation])
	if err != nil {
		return desc, fmt.Errorf("%w: layer %s: no valid %s annotation: %w", snapshotter.ReasonNotLazy, src.Digest, estargz.TOCJSONDigestAnnotation, err)
	}
	desc.Annotations[estargz.TOCJSONDigestAnnotation] = toc.String()
	return desc, nil
}

var _ snapshotter.Cleaner = (*remoteFS)(nil)

// removingPrefix names content directories being removed.
const removingPrefix = ".removing-"

// Cleanup removes the content directories (the verified file contents) of the layers that are neither mounted nor being
// mounted: what the snapshots of removed images leave. Each is renamed
// away under the lock, so that a later Mount of the layer starts afresh,
// and removed after; a crash in between leaves a name the next Cleanup
// removes.
func (r *remoteFS) Cleanup(ctx context.Context) error {
	dir := filepath.Join(r.root, "content")
	ents, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil
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
	if len(trash) > 0 {
		r.log.InfoContext(ctx, "removed the content of unmounted layers", "layers", len(trash))
	}
	return errors.Join(errs...)
}

// Check reports whether the layer at mountpoint is still served.
func (r *remoteFS) Check(ctx context.Context, mountpoint string, labels map[string]string) error {
	r.mu.Lock()
	ml, ok := r.mounted[mountpoint]
	r.mu.Unlock()
	if !ok {
		return fmt.Errorf("no layer mounted at %s", mountpoint)
	}
	var st syscall.Statfs_t
	if err := syscall.Statfs(mountpoint, &st); err != nil {
		return fmt.Errorf("layer %s: %w", ml.key.blob, err)
	}
	return nil
}

// Unmount unmounts the layer at mountpoint.
func (r *remoteFS) Unmount(ctx context.Context, mountpoint string) error {
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
	err := ml.mount.Unmount()
	ml.layer.Close()
	return err
}

// Stats returns each mounted layer's counters, by layer digest.
func (r *remoteFS) Stats() map[digest.Digest]lfs.Stats {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := map[digest.Digest]lfs.Stats{}
	for _, ml := range r.mounted {
		out[ml.key.blob] = ml.layer.Stats()
	}
	return out
}

var _ snapshotter.Usager = (*remoteFS)(nil)

// Usage reports the local disk a mounted layer takes: its verified file
// contents (the compressed chunk cache is shared between layers and is
// reported by the cache metrics instead).
func (r *remoteFS) Usage(ctx context.Context, mountpoint string) (snapshots.Usage, error) {
	r.mu.Lock()
	ml, ok := r.mounted[mountpoint]
	r.mu.Unlock()
	if !ok {
		return snapshots.Usage{}, fmt.Errorf("no layer mounted at %s", mountpoint)
	}
	var u snapshots.Usage
	dir := filepath.Join(r.root, "content", ml.key.contentName(), "files")
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
