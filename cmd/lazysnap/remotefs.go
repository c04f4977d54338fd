package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"

	"github.com/containerd/containerd/v2/core/snapshots"
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

// layerRecord is kept beside a layer's content once its TOC has been
// verified, so that a restart can mount it again without asking the
// registry for the manifest.
type layerRecord struct {
	Ref  string             `json:"ref"`
	Desc ocispec.Descriptor `json:"desc"`
}

// remoteFS mounts eStargz layers: the snapshotter's FileSystem.
type remoteFS struct {
	src      layerSource
	root     string // content directories live under root/content/<digest>
	opts     lfs.Options
	log      *slog.Logger
	mu       sync.Mutex
	mounted  map[string]*mountedLayer // by mountpoint
	mounting map[digest.Digest]int    // Mounts in progress, by layer: Cleanup spares their content
	warm     *warmer                  // reads ahead the layers above one being mounted
}

type mountedLayer struct {
	digest digest.Digest
	layer  *lfs.Layer
	mount  *lfs.Mount
}

func newRemoteFS(src layerSource, root string, opts lfs.Options, log *slog.Logger) *remoteFS {
	return &remoteFS{src: src, root: root, opts: opts, log: log, mounted: map[string]*mountedLayer{}, mounting: map[digest.Digest]int{}, warm: newWarmer(src)}
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
	r.markMounting(dg, 1)
	defer r.markMounting(dg, -1)
	r.warm.start(src, r.busy)
	contentDir := filepath.Join(r.root, "content", dg.Encoded())
	desc, b, er, err := r.open(ctx, contentDir, src)
	if err != nil {
		return err
	}
	if err := r.remember(contentDir, src.Ref, desc); err != nil {
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
	r.mounted[mountpoint] = &mountedLayer{digest: dg, layer: l, mount: m}
	r.mu.Unlock()
	r.log.InfoContext(ctx, "layer mounted lazily", "layer", dg, "ref", src.Ref, "inodes", idx.Len(), "mountpoint", mountpoint)
	return nil
}

// open opens the layer's blob, the warmer's when it read the layer ahead,
// and its TOC, verified against the layer's TOC digest.
func (r *remoteFS) open(ctx context.Context, contentDir string, src snapshotter.LayerSource) (ocispec.Descriptor, blob, *estargz.Reader, error) {
	dg := src.Digest
	desc, err := r.descriptor(ctx, contentDir, src)
	if err != nil {
		return desc, nil, nil, err
	}
	toc := digest.Digest(desc.Annotations[estargz.TOCJSONDigestAnnotation])
	if toc == "" {
		return desc, nil, nil, fmt.Errorf("%w: layer %s has no %s annotation", snapshotter.ReasonNotLazy, dg, estargz.TOCJSONDigestAnnotation)
	}
	b := r.warm.take(ctx, dg)
	if b == nil {
		// ctx is the Prepare request's; the blob outlives it
		if b, err = r.src.Blob(context.WithoutCancel(ctx), src.Ref, desc); err != nil {
			return desc, nil, nil, fmt.Errorf("layer %s: %w", dg, err)
		}
	}
	er, err := openBlob(b, toc)
	switch {
	case errors.Is(err, estargz.ErrVerify):
		return desc, nil, nil, fmt.Errorf("%w: layer %s: %w", snapshotter.ReasonVerification, dg, err)
	case errors.Is(err, estargz.ErrFormat) || errors.Is(err, estargz.ErrTooLarge):
		return desc, nil, nil, fmt.Errorf("%w: layer %s: %w", snapshotter.ReasonNotLazy, dg, err)
	case err != nil:
		return desc, nil, nil, fmt.Errorf("layer %s: %w", dg, err)
	}
	return desc, b, er, nil
}

// busy reports whether layer dg is mounted or being mounted.
func (r *remoteFS) busy(dg digest.Digest) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.mounting[dg] > 0 {
		return true
	}
	for _, ml := range r.mounted {
		if ml.digest == dg {
			return true
		}
	}
	return false
}

// descriptor returns the layer's descriptor with its TOC digest: from the
// labels (containerd passes the manifest's annotation), else from a record
// a previous verified mount of this blob left, else from the manifest.
func (r *remoteFS) descriptor(ctx context.Context, dir string, src snapshotter.LayerSource) (ocispec.Descriptor, error) {
	if src.TOCDigest != "" {
		return ocispec.Descriptor{MediaType: ocispec.MediaTypeImageLayerGzip, Digest: src.Digest,
			Annotations: map[string]string{estargz.TOCJSONDigestAnnotation: src.TOCDigest.String()}}, nil
	}
	if b, err := os.ReadFile(filepath.Join(dir, "layer.json")); err == nil {
		var rec layerRecord
		if json.Unmarshal(b, &rec) == nil && rec.Desc.Digest == src.Digest {
			return rec.Desc, nil
		}
	}
	desc, err := r.src.Layer(ctx, src.Ref, src.Digest)
	if err != nil {
		return desc, fmt.Errorf("layer %s of %s: %w", src.Digest, src.Ref, err)
	}
	return desc, nil
}

// remember records a descriptor whose TOC has been verified against the
// blob, so that a restart need not ask the registry for the manifest.
func (r *remoteFS) remember(dir, ref string, desc ocispec.Descriptor) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	b, _ := json.Marshal(&layerRecord{Ref: ref, Desc: desc})
	return os.WriteFile(filepath.Join(dir, "layer.json"), b, 0o600)
}

func (r *remoteFS) markMounting(dg digest.Digest, n int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.mounting[dg] += n; r.mounting[dg] <= 0 {
		delete(r.mounting, dg)
	}
}

var _ snapshotter.Cleaner = (*remoteFS)(nil)

// removingPrefix names content directories being removed.
const removingPrefix = ".removing-"

// Cleanup removes the content directories (the verified file contents and
// the layer record) of the layers that are neither mounted nor being
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
		used[ml.digest.Encoded()] = true
	}
	for dg := range r.mounting {
		used[dg.Encoded()] = true
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
		return fmt.Errorf("layer %s: %w", ml.digest, err)
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
		out[ml.digest] = ml.layer.Stats()
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
	dir := filepath.Join(r.root, "content", ml.digest.Encoded(), "files")
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
