package convert

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"

	"github.com/lazysnap/lazysnap/layer"
	"github.com/lazysnap/lazysnap/soci"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"golang.org/x/sync/errgroup"
)

// IndexOptions configures IndexImage and IndexAt.
type IndexOptions struct {
	// Format is the index format written: FormatSOCI (the default; the
	// only one of Formats(layer.InputBlob)).
	Format string
	// SpanSize is the zTOCs' span size (0: soci.DefaultSpanSize).
	SpanSize int64
	// MinLayerSize: smaller layers get no zTOC (they are pulled).
	MinLayerSize int64
	// Parallel is how many layers are indexed at once (2).
	Parallel int
	// BuildTool is recorded in the zTOCs and index ("lazysnap").
	BuildTool string
	// Progress, if set, is called after each layer that got a zTOC or
	// was skipped (from any goroutine, one call at a time); a layer that
	// failed is not reported: IndexImage returns its error.
	Progress func(IndexLayerReport)
	// Platforms, if any, select the manifests indexed (and, by IndexAt,
	// pulled); the others are left out of the result, as for
	// Options.Platforms. None selects every platform.
	Platforms []ocispec.Platform
}

// IndexLayerReport describes one layer of an indexed image.
type IndexLayerReport struct {
	Layer ocispec.Descriptor
	Ztoc  *ocispec.Descriptor // nil if the layer got none
	Files int
	Spans int
	// Skipped says why the layer got no zTOC (never empty when Ztoc is
	// nil).
	Skipped string
}

// IndexReport describes an indexing.
type IndexReport struct {
	Layers    []IndexLayerReport
	Manifests int
	Root      ocispec.Descriptor // the new image index
	Pull      *PullReport
	Push      *PushReport
}

// IndexImage gives the image of the OCI layout at src a SOCI v2 index as
// `soci convert` does, writing the result to the layout dst (which may be
// src; blobs it lacks are copied): a zTOC per gzip layer, a SOCI index
// manifest per image manifest (its layers the zTOCs in layer order,
// annotated with the layer's digest and media type), the image manifest
// annotated with the index's digest (as an OCI manifest), and an image
// index holding both (the root of index.json's entry, which keeps its
// annotations). Layer blobs are read, never changed.
func IndexImage(ctx context.Context, src, dst string, opts IndexOptions) (*IndexReport, error) {
	w, err := writerNamed(cmp.Or(opts.Format, FormatSOCI), layer.InputBlob)
	if err != nil {
		return nil, err
	}
	if opts.Parallel <= 0 {
		opts.Parallel = 2
	}
	if opts.BuildTool == "" {
		opts.BuildTool = "lazysnap"
	}
	x := &indexer{ctx: ctx, w: w, src: layout{src}, dst: layout{dst}, opts: opts, rep: &IndexReport{}, ztocs: map[digest.Digest]*IndexLayerReport{}}
	idx, err := x.src.readIndex()
	if err != nil {
		return nil, err
	}
	out := *idx
	out.Manifests = nil
	for _, m := range idx.Manifests {
		if m.Platform != nil && !platformSet(opts.Platforms).keep(m) {
			continue // an index.json entry of another platform
		}
		nm, err := x.indexRoot(m)
		if err != nil {
			return nil, err
		}
		out.Manifests = append(out.Manifests, nm)
	}
	if len(out.Manifests) == 0 && len(idx.Manifests) > 0 {
		return nil, platformSet(opts.Platforms).noneMatched(src)
	}
	if len(out.Manifests) > 0 {
		x.rep.Root = out.Manifests[0]
	}
	if err := x.dst.writeIndex(&out); err != nil {
		return nil, err
	}
	return x.rep, nil
}

type indexer struct {
	ctx      context.Context
	w        layer.Writer // IndexOptions.Format's
	src, dst layout
	opts     IndexOptions
	rep      *IndexReport

	mu    sync.Mutex
	ztocs map[digest.Digest]*IndexLayerReport // by layer digest
}

func (x *indexer) copyBlob(d digest.Digest) error {
	if x.src.dir == x.dst.dir {
		return nil
	}
	if _, err := os.Stat(x.dst.blobPath(d)); err == nil {
		return nil
	}
	if err := os.MkdirAll(filepath.Dir(x.dst.blobPath(d)), 0o755); err != nil {
		return err
	}
	if os.Link(x.src.blobPath(d), x.dst.blobPath(d)) == nil {
		return nil
	}
	return x.src.copyBlob(x.dst, d)
}

// indexRoot indexes what an index.json entry names and returns the entry
// of the new image index.
func (x *indexer) indexRoot(d ocispec.Descriptor) (ocispec.Descriptor, error) {
	if err := validDescriptor("index entry", d); err != nil {
		return d, err
	}
	var oi ocispec.Index
	switch d.MediaType {
	case ocispec.MediaTypeImageIndex, dockerManifestList:
		b, err := x.src.readBlob("index", d, maxJSONBlob)
		if err != nil {
			return d, err
		}
		if err := json.Unmarshal(b, &oi); err != nil {
			return d, fmt.Errorf("%w: index %s: %v", ErrLayout, d.Digest, err)
		}
	case ocispec.MediaTypeImageManifest, dockerManifest:
		oi.Manifests = []ocispec.Descriptor{d}
		oi.Manifests[0].Annotations = nil
	default:
		return d, fmt.Errorf("%w: index entry of media type %s", ErrLayout, d.MediaType)
	}
	var sociDescs []ocispec.Descriptor
	plats := platformSet(x.opts.Platforms)
	single := len(oi.Manifests) == 1 && oi.Manifests[0].Digest == d.Digest
	kept := oi.Manifests[:0]
	for _, m := range oi.Manifests {
		if m.ArtifactType == soci.ArtifactTypeV2 {
			continue // an earlier SOCI index: replaced
		}
		if !single && !plats.keep(m) {
			continue
		}
		if m.MediaType != ocispec.MediaTypeImageManifest && m.MediaType != dockerManifest {
			if err := x.copyTree(m); err != nil {
				return d, err
			}
			kept = append(kept, m)
			continue
		}
		nm, sd, err := x.indexManifest(m)
		if err != nil {
			return d, err
		}
		kept = append(kept, nm)
		if sd != nil {
			sociDescs = append(sociDescs, *sd)
		}
	}
	if len(kept) == 0 && !plats.all() {
		return d, plats.noneMatched("index " + d.Digest.String())
	}
	oi.Manifests = append(kept, sociDescs...)
	oi.SchemaVersion, oi.MediaType = 2, ocispec.MediaTypeImageIndex
	b, err := json.Marshal(&oi)
	if err != nil {
		return d, err
	}
	nd, err := x.dst.writeBlob(ocispec.MediaTypeImageIndex, b)
	if err != nil {
		return d, err
	}
	nd.Annotations = d.Annotations
	return nd, nil
}

// copyTree copies a manifest and what it names (a platform not indexed).
func (x *indexer) copyTree(d ocispec.Descriptor) error {
	if err := validDescriptor("manifest", d); err != nil {
		return err
	}
	b, err := x.src.readBlob("manifest", d, maxJSONBlob)
	if err != nil {
		return err
	}
	var m ocispec.Manifest
	if err := json.Unmarshal(b, &m); err != nil {
		return fmt.Errorf("%w: manifest %s: %v", ErrLayout, d.Digest, err)
	}
	for _, c := range append([]ocispec.Descriptor{d, m.Config}, m.Layers...) {
		if err := validDescriptor("blob", c); err != nil {
			return err
		}
		if err := x.copyBlob(c.Digest); err != nil {
			return err
		}
	}
	return nil
}

// indexManifest builds the zTOCs of an image manifest's layers and its
// SOCI index, and returns the annotated manifest's descriptor and the
// index's (nil if no layer got a zTOC).
func (x *indexer) indexManifest(d ocispec.Descriptor) (ocispec.Descriptor, *ocispec.Descriptor, error) {
	b, err := x.src.readBlob("manifest", d, maxJSONBlob)
	if err != nil {
		return d, nil, err
	}
	var m ocispec.Manifest
	if err := json.Unmarshal(b, &m); err != nil {
		return d, nil, fmt.Errorf("%w: manifest %s: %v", ErrLayout, d.Digest, err)
	}
	if err := validDescriptor("config", m.Config); err != nil {
		return d, nil, err
	}
	if err := x.copyBlob(m.Config.Digest); err != nil {
		return d, nil, err
	}
	reps := make([]*IndexLayerReport, len(m.Layers))
	g, _ := errgroup.WithContext(x.ctx)
	g.SetLimit(x.opts.Parallel)
	for i, l := range m.Layers {
		if err := validDescriptor(fmt.Sprintf("manifest %s: layer %d", d.Digest, i), l); err != nil {
			return d, nil, err
		}
		if err := x.copyBlob(l.Digest); err != nil {
			return d, nil, err
		}
		g.Go(func() error {
			r, err := x.layer(l)
			reps[i] = r
			return err
		})
	}
	if err := g.Wait(); err != nil {
		return d, nil, err
	}
	var ztocs []soci.Descriptor
	for _, r := range reps {
		if r.Ztoc != nil {
			z := r.Ztoc
			ztocs = append(ztocs, soci.Descriptor{MediaType: z.MediaType, Digest: z.Digest, Size: z.Size, Annotations: z.Annotations})
		}
	}
	x.rep.Manifests++
	// both entries of the image index carry the platform: a client picks
	// an entry with one over an entry without (containerd does), and the
	// image manifest must win over its SOCI index
	platform := d.Platform
	if platform == nil {
		platform = x.platform(m.Config)
	}
	if plats := platformSet(x.opts.Platforms); !plats.match(platform) {
		return d, nil, plats.noneMatched("manifest " + d.Digest.String())
	}
	var sd *ocispec.Descriptor
	delete(m.Annotations, soci.AnnotationIndexDigest)
	if len(ztocs) > 0 {
		ib, err := json.Marshal(soci.NewIndexManifest(ztocs, x.opts.BuildTool))
		if err != nil {
			return d, nil, err
		}
		if _, err := x.dst.writeBlob(soci.ArtifactTypeV2, []byte("{}")); err != nil {
			return d, nil, err
		}
		id, err := x.dst.writeBlob(ocispec.MediaTypeImageManifest, ib)
		if err != nil {
			return d, nil, err
		}
		if m.Annotations == nil {
			m.Annotations = map[string]string{}
		}
		m.Annotations[soci.AnnotationIndexDigest] = id.Digest.String()
		id.ArtifactType, id.Platform = soci.ArtifactTypeV2, platform
		sd = &id
	}
	m.SchemaVersion, m.MediaType = 2, ocispec.MediaTypeImageManifest
	if m.Config.MediaType == dockerConfig {
		m.Config.MediaType = ocispec.MediaTypeImageConfig
	}
	nb, err := json.Marshal(&m)
	if err != nil {
		return d, nil, err
	}
	nd, err := x.dst.writeBlob(ocispec.MediaTypeImageManifest, nb)
	if err != nil {
		return d, nil, err
	}
	nd.Platform, nd.Annotations = platform, m.Annotations
	if sd != nil {
		sd.Annotations = map[string]string{soci.AnnotationManifestDigest: nd.Digest.String()}
	}
	return nd, sd, nil
}

// layer builds the zTOC of one layer (once per digest) and stores it.
func (x *indexer) layer(l ocispec.Descriptor) (_ *IndexLayerReport, err error) {
	x.mu.Lock()
	if r, ok := x.ztocs[l.Digest]; ok {
		x.mu.Unlock()
		return r, nil
	}
	x.mu.Unlock()
	r := &IndexLayerReport{Layer: l}
	defer func() {
		if err != nil {
			return // not skipped: failed, and the indexing with it
		}
		x.mu.Lock()
		x.ztocs[l.Digest] = r
		x.rep.Layers = append(x.rep.Layers, *r)
		if x.opts.Progress != nil {
			x.opts.Progress(*r)
		}
		x.mu.Unlock()
	}()
	if why := x.w.Skip(l); why != "" {
		r.Skipped = why
		return r, nil
	}
	if l.Size < x.opts.MinLayerSize {
		r.Skipped = fmt.Sprintf("%d bytes, under the minimum of %d", l.Size, x.opts.MinLayerSize)
		return r, nil
	}
	f, err := os.Open(x.src.blobPath(l.Digest))
	if err != nil {
		return r, fmt.Errorf("%w: %v", ErrLayout, err)
	}
	defer f.Close()
	var buf bytes.Buffer
	h := &hashedReaderAt{r: f, h: l.Digest.Algorithm().Digester()}
	wopts := layer.WriteOptions{ChunkSize: x.opts.SpanSize, BuildTool: x.opts.BuildTool}
	res, err := x.w.Write(x.ctx, &buf, io.NewSectionReader(h, 0, l.Size), l, wopts)
	if err != nil {
		return r, fmt.Errorf("layer %s: %w", l.Digest, err)
	}
	if ok, err := h.matches(l.Digest, l.Size); err != nil {
		return r, fmt.Errorf("%w: layer %s: %v", ErrLayout, l.Digest, err)
	} else if !ok {
		return r, fmt.Errorf("%w: layer %s does not match its digest", ErrLayout, l.Digest)
	}
	if _, err := x.dst.writeBlob(res.Desc.MediaType, buf.Bytes()); err != nil {
		return r, err
	}
	// and packed, for lazysnap's mounts (soci.PackZtoc)
	packed, err := soci.PackZtoc(buf.Bytes(), res.Desc.Annotations)
	if err != nil {
		return r, err
	}
	if _, err := x.dst.writeBlob(soci.PackedMediaType, packed); err != nil {
		return r, err
	}
	r.Ztoc = &res.Desc
	r.Files, r.Spans = res.Files, res.Chunks
	return r, nil
}

// platform reads an image config's platform (nil if it has none).
func (x *indexer) platform(cfg ocispec.Descriptor) *ocispec.Platform {
	b, err := x.src.readBlob("config", cfg, maxJSONBlob)
	if err != nil {
		return nil
	}
	return configPlatform(b)
}

// hashedReaderAt hashes what is read through it while the reads follow
// one another from the start (an InputBlob writer's, layer.Writer).
type hashedReaderAt struct {
	r io.ReaderAt
	h digest.Digester
	n int64 // bytes hashed, from 0
}

func (t *hashedReaderAt) ReadAt(p []byte, off int64) (int, error) {
	n, err := t.r.ReadAt(p, off)
	if off <= t.n && off+int64(n) > t.n {
		t.h.Hash().Write(p[t.n-off : n])
		t.n = off + int64(n)
	}
	return n, err
}

// matches hashes the rest of the size bytes, from where the reads in
// order stopped, and says whether they are d.
func (t *hashedReaderAt) matches(d digest.Digest, size int64) (bool, error) {
	if _, err := io.Copy(io.Discard, io.NewSectionReader(t, t.n, size-t.n)); err != nil {
		return false, err
	}
	if t.n != size {
		return false, nil
	}
	return t.h.Digest() == d, nil
}

// IndexAt indexes the image at src (IndexImage) into dst, either of which
// may be a registry reference (through ropts.Resolver): a registry source
// is pulled into a temporary layout and indexed there, and a registry
// destination is pushed from it, the layer blobs (which the registry has)
// not uploaded again. A zero dst is src.
func IndexAt(ctx context.Context, src, dst Location, opts IndexOptions, ropts Options) (*IndexReport, error) {
	if dst == (Location{}) {
		dst = src
	}
	var rep *IndexReport
	ropts.Platforms = opts.Platforms
	pull, push, err := throughLayouts(ctx, src, dst, ropts, "lazysnap-index-", true, func(srcPath, dstPath string) (err error) {
		rep, err = IndexImage(ctx, srcPath, dstPath, opts)
		return err
	})
	if err != nil {
		return nil, err
	}
	rep.Pull, rep.Push = pull, push
	return rep, nil
}
