package remote

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"runtime"
	"strconv"
	"sync"
	"time"

	"github.com/lazysnap/lazysnap/fetcher"
	"github.com/lazysnap/lazysnap/fs/fetch"
	"github.com/lazysnap/lazysnap/layer"
	"github.com/lazysnap/lazysnap/snapshotter"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// Blob is a layer blob opened for range reads (layer.Blob).
type Blob = layer.Blob

// Source is where an FS finds layers: a registry (NewRegistrySource).
type Source interface {
	// Layer finds the layer's descriptor, with its annotations, in the
	// image ref names.
	Layer(ctx context.Context, ref string, layer digest.Digest) (ocispec.Descriptor, error)
	// Blob opens the layer blob for range reads.
	Blob(ctx context.Context, ref string, desc ocispec.Descriptor) (Blob, error)
}

// fetcherSource is the Source of a real registry.
type fetcherSource struct {
	f    *fetcher.Fetcher
	m    *manifestCache // nil: none
	soci *sociCache     // SOCI indexes by image manifest digest
	// sociV1 lets SOCI v1 indexes (found among the manifest's referrers)
	// be used: see WithSociV1
	sociV1 bool
	// trusted are the repositories whose v1 SOCI indexes are used
	// whatever sociV1 says: see WithTrustedSociRepositories
	trusted []string
}

// SourceOption configures NewRegistrySource.
type SourceOption func(*fetcherSource)

// WithSociV1 lets the Source use SOCI v1 indexes (off by default). A v1
// index is not named by the image: it is found among the manifest's
// referrers (the referrers API or its tag schema), which anyone who can
// push to the repository, or a mirror, can add to, and its zTOCs say what
// a layer's files are. Every file's metadata is checked against the
// layer's tar before it is served, but a forged index can still make
// mounts of the image fail (EIO) where an ordinary pull would work. Off,
// a layer whose image has only a v1 index falls back, with that reason.
func WithSociV1(allow bool) SourceOption { return func(s *fetcherSource) { s.sociV1 = allow } }

// WithTrustedSociRepositories names repositories (registry host and
// path, as "registry.example/lazysnap-indexes") that the cluster's nodes
// publish SOCI indexes to (FS's Options.Publish) and trust: the v1 index
// of an image manifest found among its referrers in one of them (the
// referrers API or its tag schema, asked for the manifest's digest) is
// used even without WithSociV1, before one in the image's own
// repository. Whoever can push to such a repository chooses what lazy
// mounts of the image serve until each layer is complete and checked
// against its digest (Options.VerifyBlob).
func WithTrustedSociRepositories(repos ...string) SourceOption {
	return func(s *fetcherSource) { s.trusted = append(s.trusted, repos...) }
}

var _ Source = fetcherSource{}

// NewRegistrySource returns the Source of the registries f reaches. Its
// blobs read the layer's tail (the footer and, for small layers, the
// whole TOC) in the request that opens them, and serve later reads that
// reach into the tail from memory.
func NewRegistrySource(f *fetcher.Fetcher, opts ...SourceOption) Source {
	s := fetcherSource{f: f, m: &manifestCache{byRef: map[string]cachedManifest{}}, soci: newSociCache()}
	for _, o := range opts {
		o(&s)
	}
	return s
}

// manifestCache keeps the layer descriptors of the manifests Layer read
// last, so that the Mounts of an image's other layers, which containerd
// makes one after another, need no request for them (the
// zstd:chunked annotations, which are not labels, are read from the
// manifest). A layer it does not list is looked up anew; nothing in it is
// trusted more than the registry's answer, since every index is verified
// against the blob.
type manifestCache struct {
	mu    sync.Mutex
	byRef map[string]cachedManifest
}

type cachedManifest struct {
	layers []ocispec.Descriptor
	at     time.Time
}

const (
	manifestTTL     = time.Minute // an image's Mounts come within seconds
	maxCachedImages = 64
)

func (c *manifestCache) get(ref string, dg digest.Digest) (ocispec.Descriptor, bool) {
	if c == nil {
		return ocispec.Descriptor{}, false
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	m, ok := c.byRef[ref]
	if !ok || time.Since(m.at) > manifestTTL {
		return ocispec.Descriptor{}, false
	}
	for _, l := range m.layers {
		if l.Digest == dg {
			return l, true
		}
	}
	return ocispec.Descriptor{}, false
}

func (c *manifestCache) put(ref string, layers []ocispec.Descriptor) {
	if c == nil {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.byRef) >= maxCachedImages {
		for k, m := range c.byRef {
			if time.Since(m.at) > manifestTTL || len(c.byRef) >= maxCachedImages {
				delete(c.byRef, k)
			}
		}
	}
	c.byRef[ref] = cachedManifest{layers: layers, at: time.Now()}
}

// mountTailSize is how much of a layer's end its first request reads: the
// footer and, for small layers, the whole TOC, so that mounting costs one
// round trip (two when the TOC is larger: estargz.Open reads the rest of
// it in one piece). It is kept small because bytes beyond the TOC are
// fetched whether the container needs them or not; those are served from
// the tail instead of being fetched again.
const mountTailSize = 64 << 10

// maxTailHint bounds the tail a layer's tail-size annotation makes the
// first request read: the annotation is not verified, and a larger index
// is read as without it (the footer first).
const maxTailHint = 16 << 20

// tailSize is how much of the blob's end its opening request reads: what
// the layer's tail-size annotation (snapshotter.LabelTailSize) says holds
// its index and footer, when it does and that is no more than
// maxTailHint, else mountTailSize.
func tailSize(desc ocispec.Descriptor) int64 {
	n, err := strconv.ParseInt(desc.Annotations[snapshotter.LabelTailSize], 10, 64)
	if err != nil || n <= 0 || n > maxTailHint {
		return mountTailSize
	}
	return n
}

// Blob opens the blob and reads its tail in the same request (which also
// tells the size, when the labels did not), unless the blob's format
// keeps its index elsewhere (is no layer.Tailer).
func (s fetcherSource) Blob(ctx context.Context, ref string, desc ocispec.Descriptor) (Blob, error) {
	if !wantsTail(desc) && desc.Size > 0 {
		b, err := s.f.Blob(ctx, ref, desc)
		if err != nil {
			return nil, err
		}
		return &tailBlob{Blob: b, off: b.Size(), f: s.f, ref: ref}, nil
	}
	b, tail, err := s.f.BlobWithTail(ctx, ref, desc, tailSize(desc))
	if err != nil {
		return nil, err
	}
	return &tailBlob{Blob: b, off: b.Size() - int64(len(tail)), tail: tail, f: s.f, ref: ref}, nil
}

// wantsTail reports whether a blob of desc is opened with its tail: unless
// the first format that claims it is no layer.Tailer. A blob of no format
// known yet (a layer read ahead) is.
func wantsTail(desc ocispec.Descriptor) bool {
	for _, f := range formats(0, nil) {
		if _, ok, _ := f.IndexDigest(desc); ok {
			_, tailer := f.(layer.Tailer)
			return tailer
		}
	}
	return true
}

// tailBlob is a fetcher blob whose last bytes are already in memory:
// range reads that reach into them take those bytes instead of fetching
// them again. The layer verifies every chunk as usual; a failed chunk in
// the tail drops the tail (Invalidate) so that it is fetched anew.
type tailBlob struct {
	*fetcher.Blob
	off int64 // where tail starts in the blob
	f   *fetcher.Fetcher
	ref string

	mu   sync.Mutex
	tail []byte // nil once invalidated
	// local is the zTOC a line-rate pull left (setArtifact), named by
	// localDigest: Artifact answers it instead of fetching
	local       []byte
	localDigest digest.Digest
}

// Tail returns the blob's last bytes read at open (nil once dropped).
func (t *tailBlob) Tail() []byte {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.tail
}

func (t *tailBlob) ReadRange(ctx context.Context, off, n int64) ([]byte, error) {
	tail := t.Tail()
	end := off + n
	if tail == nil || end <= t.off || off < 0 || n <= 0 || end > t.Size() {
		return t.Blob.ReadRange(ctx, off, n)
	}
	if off >= t.off {
		return append([]byte(nil), tail[off-t.off:end-t.off]...), nil
	}
	head, err := t.Blob.ReadRange(ctx, off, t.off-off)
	if err != nil {
		return nil, err
	}
	return append(head, tail[:end-t.off]...), nil
}

// StreamRange streams what lies before the tail; a range that reaches into
// the tail is read with ReadRange, which takes those bytes from memory.
func (t *tailBlob) StreamRange(ctx context.Context, off, n int64, fn func([]byte)) error {
	if t.Tail() == nil || off+n <= t.off {
		return t.Blob.StreamRange(ctx, off, n, fn)
	}
	data, err := t.ReadRange(ctx, off, n)
	if err != nil {
		return err
	}
	fn(data)
	return nil
}

// ReadMultiRange reads several ranges: those before the tail with one
// multi-range request (fetcher.Blob.ReadRanges), the others as ReadRange
// does.
func (t *tailBlob) ReadMultiRange(ctx context.Context, ranges []fetch.Range) ([][]byte, error) {
	out := make([][]byte, len(ranges))
	var far []fetcher.Range
	var at []int
	tail := t.Tail()
	for i, r := range ranges {
		if tail == nil || r.Off+r.Len <= t.off {
			far = append(far, fetcher.Range{Off: r.Off, Len: r.Len})
			at = append(at, i)
			continue
		}
		b, err := t.ReadRange(ctx, r.Off, r.Len)
		if err != nil {
			return nil, err
		}
		out[i] = b
	}
	if len(far) > 0 {
		got, err := t.Blob.ReadRanges(ctx, far)
		if err != nil {
			return nil, err
		}
		for j, i := range at {
			out[i] = got[j]
		}
	}
	return out, nil
}

func (t *tailBlob) Invalidate(off, n int64) {
	if off+n > t.off {
		t.mu.Lock()
		t.tail = nil
		t.mu.Unlock()
	}
	t.Blob.Invalidate(off, n)
}

// maxWarmTOC caps the compressed TOC (with the footer) that extendTail
// reads ahead of a Mount: estargz.DefaultMaxTOCSize bounds the TOC JSON
// itself; compressed, a TOC within it is far smaller.
const maxWarmTOC = 64 << 20

// extendTail makes the tail reach back to the start of the index that the
// footer at its end points to (the first layer.Tailer format's that finds
// its footer there), reading what lies before it in one request, so that
// a later Open reads nothing. The bytes are not verified
// here: Open verifies the TOC against its digest and every chunk read
// from the tail is verified as usual. It must be called before the blob
// is shared.
func (t *tailBlob) extendTail(ctx context.Context) error {
	tail := t.Tail()
	tocOff, found := int64(0), false
	for _, f := range formats(0, nil) {
		if tf, ok := f.(layer.Tailer); ok {
			if tocOff, found = tf.IndexStart(tail, t.Size()); found {
				break
			}
		}
	}
	if !found {
		return errNoFooter
	}
	if tocOff >= t.off {
		return nil
	}
	if t.off-tocOff > maxWarmTOC {
		return fmt.Errorf("TOC of %d bytes", t.off-tocOff)
	}
	head, err := t.Blob.ReadRange(ctx, tocOff, t.off-tocOff)
	if err != nil {
		return err
	}
	t.mu.Lock()
	t.tail, t.off = append(head, tail...), tocOff
	t.mu.Unlock()
	return nil
}

// errNoFooter: the blob's tail ends in no format's footer.
var errNoFooter = errors.New("remote: the blob's tail ends in no known footer")

// trimTail keeps only the last n bytes of the tail in memory, once Open
// no longer needs a tail that extendTail grew to cover a large TOC: the
// chunks at the very end may still be served from it, the rest would be
// megabytes held for as long as the layer is mounted. It must be called
// before the blob is shared.
func (t *tailBlob) trimTail(n int) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if len(t.tail) > n {
		t.off += int64(len(t.tail) - n)
		t.tail = append([]byte(nil), t.tail[len(t.tail)-n:]...)
	}
}

// Layer resolves ref (picking this platform's manifest from an index) and
// returns the descriptor of layer dg with its annotations.
func (s fetcherSource) Layer(ctx context.Context, ref string, dg digest.Digest) (ocispec.Descriptor, error) {
	return s.layer(ctx, ref, dg, true)
}

// plainLayer returns the descriptor of layer dg as the manifest ref names
// gives it, without looking up a SOCI index (Layer's, if it has it
// still): what a line-rate Pull needs (blobPuller).
func (s fetcherSource) plainLayer(ctx context.Context, ref string, dg digest.Digest) (ocispec.Descriptor, error) {
	return s.layer(ctx, ref, dg, false)
}

// layer is Layer, or without the SOCI index lookup unless withSoci.
func (s fetcherSource) layer(ctx context.Context, ref string, dg digest.Digest, withSoci bool) (ocispec.Descriptor, error) {
	if l, ok := s.m.get(ref, dg); ok {
		return l, nil
	}
	im, err := s.manifest(ctx, ref)
	if err != nil {
		return ocispec.Descriptor{}, err
	}
	layers := im.layers
	if withSoci {
		// the cached layers carry what withZtoc found, so that a later
		// Mount of a sibling layer need not look again
		layers = make([]ocispec.Descriptor, len(im.layers))
		for i, l := range im.layers {
			layers[i] = s.withZtoc(ctx, ref, im.desc, im.annotations, im.siblings, l)
		}
		s.m.put(ref, layers)
	}
	for _, l := range layers {
		if l.Digest == dg {
			return l, nil
		}
	}
	return ocispec.Descriptor{}, fmt.Errorf("layer %s is not in %s", dg, ref)
}

// imageManifest is the image manifest ref names for this platform.
type imageManifest struct {
	desc        ocispec.Descriptor
	annotations map[string]string
	siblings    []ocispec.Descriptor // of desc, in the index that listed it
	layers      []ocispec.Descriptor // as the manifest gives them
	config      ocispec.Descriptor
}

// manifest resolves ref, picking this platform's manifest from an index.
func (s fetcherSource) manifest(ctx context.Context, ref string) (imageManifest, error) {
	_, desc, err := s.f.Resolve(ctx, ref)
	if err != nil {
		return imageManifest{}, err
	}
	var siblings []ocispec.Descriptor
	for range 4 { // an index of indexes is allowed, but not forever
		var doc struct {
			MediaType   string               `json:"mediaType"`
			Manifests   []ocispec.Descriptor `json:"manifests"`
			Layers      []ocispec.Descriptor `json:"layers"`
			Config      ocispec.Descriptor   `json:"config"`
			Annotations map[string]string    `json:"annotations"`
		}
		if err := s.fetchJSON(ctx, ref, desc, &doc); err != nil {
			return imageManifest{}, err
		}
		if len(doc.Manifests) == 0 {
			return imageManifest{desc: desc, annotations: doc.Annotations, siblings: siblings, layers: doc.Layers, config: doc.Config}, nil
		}
		siblings = doc.Manifests
		desc = pickPlatform(doc.Manifests)
	}
	return imageManifest{}, fmt.Errorf("%s: nested indexes too deep", ref)
}

func pickPlatform(ms []ocispec.Descriptor) ocispec.Descriptor {
	for _, m := range ms {
		if m.ArtifactType != "" {
			continue // a SOCI index, say, listed with the platform it indexes
		}
		if m.Platform != nil && m.Platform.OS == runtime.GOOS && m.Platform.Architecture == runtime.GOARCH {
			return m
		}
	}
	return ms[0]
}

func (s fetcherSource) fetchJSON(ctx context.Context, ref string, desc ocispec.Descriptor, v any) error {
	const maxManifest = 8 << 20
	if desc.Size > maxManifest {
		return fmt.Errorf("%s: manifest %s is %d bytes", ref, desc.Digest, desc.Size)
	}
	b := s.soci.doc(desc.Digest)
	if b == nil {
		rc, err := s.f.Fetch(ctx, ref, desc)
		if err != nil {
			return err
		}
		defer rc.Close()
		if b, err = io.ReadAll(io.LimitReader(rc, maxManifest)); err != nil {
			return err // a digest mismatch among them: nothing is cached
		}
		s.soci.putDoc(desc.Digest, b)
	}
	if err := json.Unmarshal(b, v); err != nil {
		return fmt.Errorf("%s: manifest %s: %w", ref, desc.Digest, err)
	}
	return nil
}
