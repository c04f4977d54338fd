package convert

import (
	"cmp"
	"compress/gzip"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"path/filepath"
	"strings"

	"github.com/containerd/containerd/v2/core/remotes"
	"github.com/klauspost/compress/zstd"
	"github.com/lazysnap/lazysnap/layer"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// Docker media types, converted to their OCI equivalents on the way.
const (
	dockerManifestList = "application/vnd.docker.distribution.manifest.list.v2+json"
	dockerManifest     = "application/vnd.docker.distribution.manifest.v2+json"
	dockerConfig       = "application/vnd.docker.container.image.v1+json"
	dockerLayerGzip    = "application/vnd.docker.image.rootfs.diff.tar.gzip"
	dockerLayerForeign = "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip"
	maxJSONBlob        = 16 << 20
)

// Options configures a conversion.
type Options struct {
	// Format is the layer format written: FormatEStargz (the default) or
	// FormatZstdChunked (Formats(layer.InputTar) lists them).
	Format string
	// ChunkSize and CompressionLevel are the format's (layer.WriteOptions;
	// zero: its defaults): gzip's level for eStargz (1 to 9), zstd's for
	// zstd:chunked (1 to 22).
	ChunkSize        int64
	CompressionLevel int
	// Prioritized files are placed first in every layer that has them.
	Prioritized []string
	// TempDir holds decompressed layers during conversion (default: the
	// destination's parent directory, so that blobs can be renamed in).
	TempDir string
	// Progress, if set, is called after each layer.
	Progress func(LayerReport)
	// Platforms, if any, select the manifests of an image index that are
	// pulled and converted; the others are left out of the result (as
	// ctr-remote's and nerdctl's convert --platform do). A single-manifest
	// image must be of one of them. None selects every platform.
	Platforms []ocispec.Platform

	// Resolver reaches registries, for registry locations (ImageAt, Pull,
	// Push); containerd's docker resolver built from a hosts directory
	// and credentials is the usual one.
	Resolver remotes.Resolver
	// Transfer, if set, is called after each blob pulled or pushed (one
	// call at a time).
	Transfer func(TransferReport)
}

// LayerReport describes one converted layer.
type LayerReport struct {
	From, To   ocispec.Descriptor
	Result     *layer.Written // nil if the layer was kept as it was
	KeptReason string         // why a layer was not converted
}

// Report describes a conversion.
type Report struct {
	Layers    []LayerReport
	Manifests int
	// Pull and Push describe the registry transfers of ImageAt (nil for
	// a layout).
	Pull *PullReport
	Push *PushReport
}

// Image converts the OCI image layout (a directory, or a tar archive of one)
// at src into dst (a directory, or a path ending in ".tar" for an archive).
// dst may be src's directory. The result is written to a temporary
// directory beside dst and put in place only when the whole image has
// converted: a new dst appears by one rename, an existing layout directory
// gets the new blobs and then its index.json; after a failure dst is as it
// was (absent if it was).
func Image(ctx context.Context, src, dst string, opts Options) (*Report, error) {
	w, err := writerNamed(cmp.Or(opts.Format, FormatEStargz), layer.InputTar)
	if err != nil {
		return nil, err
	}
	srcDir, cleanup, err := openSource(src, opts.TempDir)
	if err != nil {
		return nil, err
	}
	defer cleanup()
	archive := strings.HasSuffix(dst, ".tar")
	var existing *layout // a destination directory there already
	if fi, err := os.Stat(dst); err == nil && fi.IsDir() && !archive {
		existing = &layout{dst}
	}
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return nil, err
	}
	stage, err := os.MkdirTemp(filepath.Dir(dst), ".lazysnap-convert-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(stage) // gone by rename on success
	if opts.TempDir == "" {
		opts.TempDir = stage
	}
	c := &converter{ctx: ctx, w: w, src: layout{srcDir}, dst: layout{stage}, existing: existing, opts: opts, report: &Report{}, done: map[digest.Digest]convertedLayer{}}
	idx, err := c.src.readIndex()
	if err != nil {
		return nil, err
	}
	out := *idx
	out.Manifests = nil
	for _, m := range idx.Manifests {
		if m.Platform != nil && !platformSet(opts.Platforms).keep(m) {
			continue // an index.json entry of another platform
		}
		nm, err := c.convertDesc(m)
		if err != nil {
			return nil, err
		}
		out.Manifests = append(out.Manifests, nm)
	}
	if len(out.Manifests) == 0 && len(idx.Manifests) > 0 {
		return nil, platformSet(opts.Platforms).noneMatched(src)
	}
	switch {
	case archive:
		if err := c.dst.writeIndex(&out); err != nil {
			return nil, err
		}
		if err := writeArchive(stage, dst); err != nil {
			return nil, err
		}
	case existing != nil:
		if err := moveBlobs(stage, dst); err != nil {
			return nil, err
		}
		if err := existing.writeIndex(&out); err != nil {
			return nil, err
		}
	default:
		if err := c.dst.writeIndex(&out); err != nil {
			return nil, err
		}
		if err := os.Rename(stage, dst); err != nil {
			return nil, err
		}
	}
	return c.report, nil
}

// moveBlobs renames the blobs of the layout in from into the layout in to.
func moveBlobs(from, to string) error {
	algs, err := os.ReadDir(filepath.Join(from, "blobs"))
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	for _, alg := range algs {
		blobs, err := os.ReadDir(filepath.Join(from, "blobs", alg.Name()))
		if err != nil {
			return err
		}
		dir := filepath.Join(to, "blobs", alg.Name())
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return err
		}
		for _, b := range blobs {
			if err := os.Rename(filepath.Join(from, "blobs", alg.Name(), b.Name()), filepath.Join(dir, b.Name())); err != nil {
				return err
			}
		}
	}
	return nil
}

func openSource(src, tempDir string) (dir string, cleanup func(), err error) {
	fi, err := os.Stat(src)
	if err != nil {
		return "", nil, fmt.Errorf("%w: %v", ErrLayout, err)
	}
	if fi.IsDir() {
		return src, func() {}, nil
	}
	tmp, err := os.MkdirTemp(tempDir, "lazysnap-src-")
	if err != nil {
		return "", nil, err
	}
	if err := extractArchive(src, tmp); err != nil {
		os.RemoveAll(tmp)
		return "", nil, err
	}
	return tmp, func() { os.RemoveAll(tmp) }, nil
}

type converter struct {
	ctx      context.Context
	w        layer.Writer // Options.Format's
	src, dst layout       // dst: the staging directory
	existing *layout      // the destination directory, if it exists already
	opts     Options
	report   *Report
	done     map[digest.Digest]convertedLayer // by source digest
}

// copyBlob copies the blob d from the source to the destination, unless
// the destination (for an in-place conversion, the source) has it.
func (c *converter) copyBlob(d digest.Digest) error {
	if c.existing != nil {
		if _, err := os.Stat(c.existing.blobPath(d)); err == nil {
			return nil
		}
	}
	return c.src.copyBlob(c.dst, d)
}

// convertDesc converts what an index entry points at, keeping the entry's
// annotations and platform.
func (c *converter) convertDesc(d ocispec.Descriptor) (ocispec.Descriptor, error) {
	if err := validDescriptor("index entry", d); err != nil {
		return d, err
	}
	var nd ocispec.Descriptor
	var err error
	switch d.MediaType {
	case ocispec.MediaTypeImageIndex, dockerManifestList:
		nd, err = c.convertIndex(d)
	case ocispec.MediaTypeImageManifest, dockerManifest:
		nd, err = c.convertManifest(d)
	default:
		if err := c.copyBlob(d.Digest); err != nil {
			return d, err
		}
		return d, nil
	}
	if err != nil {
		return d, err
	}
	nd.Annotations, nd.Platform, nd.ArtifactType = d.Annotations, d.Platform, d.ArtifactType
	return nd, nil
}

func (c *converter) convertIndex(d ocispec.Descriptor) (ocispec.Descriptor, error) {
	b, err := c.src.readBlob("index", d, maxJSONBlob)
	if err != nil {
		return d, err
	}
	var idx ocispec.Index
	if err := json.Unmarshal(b, &idx); err != nil {
		return d, fmt.Errorf("%w: index %s: %v", ErrLayout, d.Digest, err)
	}
	plats := platformSet(c.opts.Platforms)
	kept := idx.Manifests[:0]
	for _, m := range idx.Manifests {
		if !plats.keep(m) {
			continue
		}
		nm, err := c.convertDesc(m)
		if err != nil {
			return d, err
		}
		kept = append(kept, nm)
	}
	if len(kept) == 0 && !plats.all() {
		return d, plats.noneMatched("index " + d.Digest.String())
	}
	idx.Manifests = kept
	idx.MediaType = ocispec.MediaTypeImageIndex
	idx.SchemaVersion = 2
	nb, err := json.Marshal(&idx)
	if err != nil {
		return d, err
	}
	return c.dst.writeBlob(ocispec.MediaTypeImageIndex, nb)
}

func (c *converter) convertManifest(d ocispec.Descriptor) (ocispec.Descriptor, error) {
	b, err := c.src.readBlob("manifest", d, maxJSONBlob)
	if err != nil {
		return d, err
	}
	var m ocispec.Manifest
	if err := json.Unmarshal(b, &m); err != nil {
		return d, fmt.Errorf("%w: manifest %s: %v", ErrLayout, d.Digest, err)
	}
	cfgBytes, err := c.src.readBlob("config of manifest "+d.Digest.String(), m.Config, maxJSONBlob)
	if err != nil {
		return d, err
	}
	var cfg map[string]json.RawMessage
	if err := json.Unmarshal(cfgBytes, &cfg); err != nil {
		return d, fmt.Errorf("%w: config %s: %v", ErrLayout, m.Config.Digest, err)
	}
	if plats := platformSet(c.opts.Platforms); d.Platform == nil && !plats.match(configPlatform(cfgBytes)) {
		return d, plats.noneMatched("manifest " + d.Digest.String())
	}
	var rootfs ocispec.RootFS
	if err := json.Unmarshal(cfg["rootfs"], &rootfs); err != nil || len(rootfs.DiffIDs) != len(m.Layers) {
		return d, fmt.Errorf("%w: config %s: rootfs.diff_ids do not match the %d layers", ErrLayout, m.Config.Digest, len(m.Layers))
	}
	for i, l := range m.Layers {
		if err := validDescriptor(fmt.Sprintf("manifest %s: layer %d", d.Digest, i), l); err != nil {
			return d, err
		}
	}
	for i, l := range m.Layers {
		nl, diffID, err := c.convertLayer(l, rootfs.DiffIDs[i])
		if err != nil {
			return d, fmt.Errorf("convert: layer %d (%s): %w", i, l.Digest, err)
		}
		m.Layers[i], rootfs.DiffIDs[i] = nl, diffID
	}
	if cfg["rootfs"], err = json.Marshal(&rootfs); err != nil {
		return d, err
	}
	nc, err := json.Marshal(cfg)
	if err != nil {
		return d, err
	}
	if m.Config, err = c.dst.writeBlob(ocispec.MediaTypeImageConfig, nc); err != nil {
		return d, err
	}
	m.MediaType, m.SchemaVersion = ocispec.MediaTypeImageManifest, 2
	nb, err := json.Marshal(&m)
	if err != nil {
		return d, err
	}
	c.report.Manifests++
	return c.dst.writeBlob(ocispec.MediaTypeImageManifest, nb)
}

// convertLayer converts one layer and returns its descriptor and diffID.
func (c *converter) convertLayer(l ocispec.Descriptor, diffID digest.Digest) (ocispec.Descriptor, digest.Digest, error) {
	if cl, ok := c.done[l.Digest]; ok { // a layer shared by several manifests
		return cl.desc, cl.diffID, nil
	}
	keep := func(reason string) (ocispec.Descriptor, digest.Digest, error) {
		c.record(LayerReport{From: l, To: l, KeptReason: reason})
		return l, diffID, c.copyBlob(l.Digest)
	}
	if why := c.w.Skip(l); why != "" {
		return keep(why)
	}
	var decompress func(io.Reader) (io.ReadCloser, error)
	switch l.MediaType {
	case ocispec.MediaTypeImageLayerGzip, dockerLayerGzip:
		decompress = func(r io.Reader) (io.ReadCloser, error) { return gzip.NewReader(r) }
	case ocispec.MediaTypeImageLayerZstd:
		decompress = func(r io.Reader) (io.ReadCloser, error) {
			zr, err := zstd.NewReader(r)
			if err != nil {
				return nil, err
			}
			return zr.IOReadCloser(), nil
		}
	case ocispec.MediaTypeImageLayer:
		decompress = func(r io.Reader) (io.ReadCloser, error) { return io.NopCloser(r), nil }
	case dockerLayerForeign, ocispec.MediaTypeImageLayerNonDistributableGzip: //nolint:staticcheck // still seen in the wild
		if _, err := os.Stat(c.src.blobPath(l.Digest)); errors.Is(err, os.ErrNotExist) {
			// not distributed: a pulled image does not have it
			c.record(LayerReport{From: l, To: l, KeptReason: "foreign layer"})
			return l, diffID, nil
		}
		return keep("foreign layer")
	default:
		return keep("media type " + l.MediaType)
	}
	tarFile, err := c.decompressLayer(l, diffID, decompress)
	if err != nil {
		return l, "", err
	}
	defer os.Remove(tarFile.Name())
	defer tarFile.Close()
	st, err := tarFile.Stat()
	if err != nil {
		return l, "", err
	}
	blobFile, err := os.CreateTemp(c.opts.TempDir, ".layer-blob-")
	if err != nil {
		return l, "", err
	}
	defer os.Remove(blobFile.Name())
	wopts := layer.WriteOptions{ChunkSize: c.opts.ChunkSize, Level: c.opts.CompressionLevel, Prioritized: c.opts.Prioritized}
	res, err := c.w.Write(c.ctx, blobFile, io.NewSectionReader(tarFile, 0, st.Size()), l, wopts)
	if cerr := blobFile.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return l, "", err
	}
	if err := c.dst.adoptBlob(blobFile.Name(), res.Desc.Digest); err != nil {
		return l, "", err
	}
	nd := res.Desc
	nd.Annotations = maps.Clone(nd.Annotations)
	if nd.Annotations == nil {
		nd.Annotations = map[string]string{}
	}
	for k, v := range l.Annotations {
		if _, ok := nd.Annotations[k]; !ok && !stale(k) {
			nd.Annotations[k] = v
		}
	}
	c.done[l.Digest] = convertedLayer{nd, res.DiffID}
	c.record(LayerReport{From: l, To: nd, Result: res})
	return nd, res.DiffID, nil
}

type convertedLayer struct {
	desc   ocispec.Descriptor
	diffID digest.Digest
}

func (c *converter) record(r LayerReport) {
	c.report.Layers = append(c.report.Layers, r)
	if c.opts.Progress != nil {
		c.opts.Progress(r)
	}
}

// decompressLayer writes the layer's tar to a temp file, verifying the
// compressed digest and the config's diffID on the way.
func (c *converter) decompressLayer(l ocispec.Descriptor, diffID digest.Digest, decompress func(io.Reader) (io.ReadCloser, error)) (*os.File, error) {
	in, err := os.Open(c.src.blobPath(l.Digest))
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrLayout, err)
	}
	defer in.Close()
	blobHash := l.Digest.Algorithm().Digester()
	zr, err := decompress(io.TeeReader(in, blobHash.Hash()))
	if err != nil {
		return nil, fmt.Errorf("%w: decompressing: %v", ErrLayout, err)
	}
	defer zr.Close()
	out, err := os.CreateTemp(c.opts.TempDir, ".layer-tar-")
	if err != nil {
		return nil, err
	}
	fail := func(err error) (*os.File, error) {
		out.Close()
		os.Remove(out.Name())
		return nil, err
	}
	tarHash := digest.SHA256.Digester()
	if _, err := io.Copy(io.MultiWriter(out, tarHash.Hash()), zr); err != nil {
		return fail(fmt.Errorf("%w: decompressing: %v", ErrLayout, err))
	}
	if _, err := io.Copy(io.Discard, io.TeeReader(in, blobHash.Hash())); err != nil {
		return fail(err)
	}
	if blobHash.Digest() != l.Digest {
		return fail(fmt.Errorf("%w: blob does not match digest %s", ErrLayout, l.Digest))
	}
	if diffID != "" && tarHash.Digest() != diffID {
		return fail(fmt.Errorf("%w: uncompressed layer is %s, config says %s", ErrLayout, tarHash.Digest(), diffID))
	}
	return out, nil
}
