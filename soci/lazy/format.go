package lazy

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"sync"
	"unsafe"

	"github.com/lazysnap/lazysnap/layer"
	"github.com/lazysnap/lazysnap/soci"
	"github.com/lazysnap/lazysnap/zran"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// Annotations a Source puts on a layer descriptor whose image has a SOCI
// index naming a zTOC for the layer (they are lazysnap's own: an image's
// manifest does not carry them).
const (
	AnnotationZtocDigest = "dev.lazysnap.soci.ztoc-digest"
	AnnotationZtocSize   = "dev.lazysnap.soci.ztoc-size"
)

// Budget is the memory budget a Format's Open holds the decoded zTOC in
// while it builds the index (index.Budget; a nil *index.Budget has no
// cap).
type Budget interface {
	// Reserve takes n bytes, or fails wrapping the budget's sentinel.
	Reserve(n int64) error
	// Release gives back n bytes Reserve took.
	Release(n int64)
}

// Format is an unmodified gzip layer with a SOCI zTOC (layer.Format):
// its files and the checkpoints from which each span of the blob is
// inflated alone, in a separate blob found through the image's SOCI
// index, which the layer's descriptor names (AnnotationZtocDigest). Its
// Open needs a layer.ArtifactBlob. It is no layer.Tailer: its blobs are
// opened without a tail.
type Format struct {
	// MaxEntries caps the zTOC's entries (0: soci.DefaultMaxFiles).
	MaxEntries int
	// Memory holds the decoded zTOC while Open builds the index (nil: no
	// cap).
	Memory Budget
}

var (
	_ layer.Format        = Format{}
	_ layer.Decoder       = (*sociDecoder)(nil)
	_ layer.EntryVerifier = (*sociDecoder)(nil)
	_ layer.Truster       = (*sociDecoder)(nil)
	_ layer.BlobChecker   = (*sociDecoder)(nil)
	_ layer.MemorySized   = (*sociDecoder)(nil)
)

// Name implements layer.Format.
func (Format) Name() string { return "soci" }

// IndexDigest implements layer.Format: the zTOC's digest.
func (Format) IndexDigest(desc ocispec.Descriptor) (digest.Digest, bool, error) {
	v, ok := desc.Annotations[AnnotationZtocDigest]
	if !ok {
		return "", false, nil
	}
	d, err := digest.Parse(v)
	if err != nil {
		return "", true, fmt.Errorf("%w: zTOC digest %q: %w", soci.ErrFormat, v, err)
	}
	return d, true, nil
}

// Open fetches the zTOC (verified against d), validates it against the
// blob and builds the index: a regular file's chunks are its
// intersections with the spans.
func (f Format) Open(ctx context.Context, b layer.Blob, d digest.Digest, build layer.Build) (layer.Decoder, error) {
	ab, ok := b.(layer.ArtifactBlob)
	if !ok {
		return nil, fmt.Errorf("%w: zTOC %s: the layer's source fetches no other blobs", soci.ErrUnsupported, d)
	}
	raw, err := ab.Artifact(ctx, d)
	if err != nil {
		return nil, fmt.Errorf("zTOC %s: %w", d, err)
	}
	// the zTOC's buffer, what it decodes into (known before it is
	// allocated) and its entries laid out for index.Build are held in the
	// index budget until the index is built
	var held int64
	defer func() { f.reserve().Release(held) }()
	z, err := soci.UnmarshalLimits(raw, soci.Limits{MaxFiles: f.MaxEntries, Reserve: func(n int64) error {
		n += int64(len(raw))
		if err := f.reserve().Reserve(n); err != nil {
			return err
		}
		held = n
		return nil
	}})
	if err != nil {
		return nil, fmt.Errorf("zTOC %s: %w", d, err)
	}
	if z.CompressedSize != b.Size() {
		return nil, fmt.Errorf("%w: zTOC %s is of a blob of %d bytes, the layer has %d", soci.ErrVerify, d, z.CompressedSize, b.Size())
	}
	lay := int64(len(z.Files)+1) * EntryLayoutBytes
	if err := f.reserve().Reserve(lay); err != nil {
		return nil, fmt.Errorf("zTOC %s of %d entries: %w", d, len(z.Files), err)
	}
	held += lay
	ents, err := sociEntries(z)
	if err != nil {
		return nil, fmt.Errorf("zTOC %s: %w", d, err)
	}
	if err := noDirHardlinks(ents); err != nil {
		return nil, fmt.Errorf("zTOC %s: %w", d, err)
	}
	idx, err := build(func(s layer.Sink) (layer.Info, error) {
		return layer.Info{DataEnd: z.CompressedSize}, layer.Feed(s, ents)
	})
	if err != nil {
		return nil, fmt.Errorf("zTOC %s: %w", d, err)
	}
	return newSociDecoder(z, idx), nil
}

// reserve is the budget Open holds the zTOC in.
func (f Format) reserve() Budget {
	if f.Memory == nil {
		return noBudget{}
	}
	return f.Memory
}

type noBudget struct{}

func (noBudget) Reserve(int64) error { return nil }
func (noBudget) Release(int64)       {}

// MemoryBytes implements layer.MemorySized: what the decoder holds, counted from what it has rather
// than from what the zTOC claims: each span's start, checkpoint, window
// and digest, the entries' header facts, the prefixes entry checks hold
// at their largest, and the span cache at its fullest, the sociSpanCache largest spans by their real sizes (the span
// size in the checkpoint blob is the builder's target, unchecked).
func (d *sociDecoder) MemoryBytes() int {
	n := len(d.z.SpanDigests) * int(unsafe.Sizeof(soci.Checkpoint{})+unsafe.Sizeof(digest.Digest("")))
	for i, c := range d.z.Checkpoints.List {
		n += len(c.Window) + len(d.z.SpanDigests[i])
	}
	for _, h := range d.heads {
		n += int(unsafe.Sizeof(h)) + len(h.name)
	}
	sizes := make([]int64, len(d.z.SpanDigests))
	for i := range sizes {
		s, e := d.z.SpanOut(i)
		sizes[i] = e - s
	}
	slices.Sort(sizes)
	for _, s := range sizes[max(len(sizes)-sociSpanCache, 0):] {
		n += int(s) + int(unsafe.Sizeof(spanData{}))
	}
	// the compressed prefixes entry checks hold, at most the largest
	// spans' (prefix.go)
	for i := range sizes {
		s, e := d.z.SpanRange(i)
		sizes[i] = e - s
	}
	slices.Sort(sizes)
	for _, s := range sizes[max(len(sizes)-prefixHeld, 0):] {
		n += int(s) + int(unsafe.Sizeof(rawPrefix{}))
	}
	return n + d.bind.memoryBytes()
}

// EntryLayoutBytes is about what Open holds in the budget, for each
// zTOC entry, besides the zTOC: about what sociEntries and index.Build hold for an
// entry at their peak: its layer.Entry (208 bytes) in a slice grown by
// appending, its name in a map, its place in the index being built.
const EntryLayoutBytes = 512

// sociMaxImplied is how many more directories than entries a zTOC may
// imply.
const sociMaxImplied = 4096

// sociEntries lays the zTOC's entries out for index.Build: the root
// first, parents before children (implied directories added), a name
// given twice taking the later entry's metadata, and each regular file's
// chunks its intersections with the spans.
func sociEntries(z *soci.Ztoc) ([]layer.Entry, error) {
	ents := []layer.Entry{{Name: "", Type: layer.TypeDir, Mode: 0o755, Implicit: true}}
	byName := map[string]int{"": 0}
	// directories a zTOC leaves out are implied, at most as many as its
	// entries and a few more (a name of 4096 bytes implies 2048: 1,000 of
	// them in a 4 MB zTOC were 2M entries and 2.8 GB allocated)
	implied, maxImplied := 0, len(z.Files)+sociMaxImplied
	var parents func(name string) error
	parents = func(name string) error {
		dir := name[:max(strings.LastIndexByte(name, '/'), 0)]
		i, ok := byName[dir]
		if ok {
			if ents[i].Type != layer.TypeDir {
				return fmt.Errorf("%w: %q is in %q, which is not a directory", soci.ErrInvalid, name, dir)
			}
			return nil
		}
		if implied++; implied > maxImplied {
			return fmt.Errorf("%w: the %d entries imply more than %d directories", soci.ErrTooLarge, len(z.Files), maxImplied)
		}
		if err := parents(dir); err != nil {
			return err
		}
		byName[dir] = len(ents)
		ents = append(ents, layer.Entry{Name: dir, Type: layer.TypeDir, Mode: 0o755, Implicit: true})
		return nil
	}
	for i := range z.Files {
		f := &z.Files[i]
		name, err := soci.Clean(f.Name)
		if err != nil {
			return nil, err
		}
		e := layer.Entry{Name: name, Type: f.Type, Size: f.Size, ModTime: f.ModTime, LinkName: f.Linkname,
			Mode: f.Mode & 0o7777, UID: int(f.UID), GID: int(f.GID), Uname: f.Uname, Gname: f.Gname,
			DevMajor: int(f.DevMajor), DevMinor: int(f.DevMinor)}
		for k, v := range f.PAX {
			if x, ok := strings.CutPrefix(k, "SCHILY.xattr."); ok {
				if e.Xattrs == nil {
					e.Xattrs = map[string][]byte{}
				}
				e.Xattrs[x] = []byte(v)
			}
		}
		if f.Type == layer.TypeHardlink {
			if e.LinkName, err = soci.Clean(f.Linkname); err != nil {
				return nil, err
			}
			if _, ok := byName[e.LinkName]; !ok || e.LinkName == name {
				return nil, fmt.Errorf("%w: hardlink %q to %q, which comes later or not at all", soci.ErrInvalid, name, e.LinkName)
			}
		}
		if f.Type == layer.TypeReg && f.Size > 0 {
			if e.Chunks, err = fileChunks(z, f); err != nil {
				return nil, err
			}
		}
		if name == "" {
			if e.Type != layer.TypeDir {
				return nil, fmt.Errorf("%w: the root is a %s", soci.ErrInvalid, e.Type)
			}
			ents[0] = e
			continue
		}
		if j, ok := byName[name]; ok {
			old := &ents[j]
			if old.Type == layer.TypeDir && e.Type != layer.TypeDir {
				return nil, fmt.Errorf("%w: directory %q given again as a %s", soci.ErrInvalid, name, e.Type)
			}
			*old = e // a later entry of a name replaces the earlier, in place
			continue
		}
		if err := parents(name); err != nil {
			return nil, err
		}
		byName[name] = len(ents)
		ents = append(ents, e)
	}
	return ents, nil
}

// noDirHardlinks refuses a hardlink to a directory (through other
// hardlinks too), as the eStargz reader does: a directory with two
// parents is a loop for whoever walks the tree.
func noDirHardlinks(ents []layer.Entry) error {
	byName := make(map[string]int, len(ents))
	for i := range ents {
		byName[ents[i].Name] = i
	}
	for i := range ents {
		e := &ents[i]
		if e.Type != layer.TypeHardlink {
			continue
		}
		for n := 0; e.Type == layer.TypeHardlink && n < len(ents); n++ {
			j, ok := byName[e.LinkName]
			if !ok {
				break
			}
			e = &ents[j]
		}
		if e.Type == layer.TypeDir {
			return fmt.Errorf("%w: hardlink %q to directory %q", soci.ErrInvalid, ents[i].Name, e.Name)
		}
	}
	return nil
}

// fileChunks returns f's intersections with the spans: each chunk's
// range is its span's, its Span the span's number.
func fileChunks(z *soci.Ztoc, f *soci.File) ([]layer.Chunk, error) {
	var cs []layer.Chunk
	end := f.Offset + f.Size
	for k := z.SpanAt(f.Offset); k < len(z.SpanDigests); k++ {
		os, oe := z.SpanOut(k)
		if os >= end {
			break
		}
		lo, hi := max(f.Offset, os), min(end, oe)
		if hi <= lo {
			continue
		}
		s, e := z.SpanRange(k)
		cs = append(cs, layer.Chunk{Offset: s, End: e, InnerOffset: lo - os, FileOffset: lo - f.Offset, Size: hi - lo, Span: k})
	}
	var n int64
	for _, c := range cs {
		n += c.Size
	}
	if n != f.Size {
		return nil, fmt.Errorf("%w: %q: the spans cover %d of its %d bytes", soci.ErrInvalid, f.Name, n, f.Size)
	}
	return cs, nil
}

// sociDecoder decodes the chunks of a SOCI layer: a chunk's raw bytes are
// its span's, verified against the span digest and inflated from the
// span's checkpoint. The last few spans inflated are kept, so that the
// many small files of one span inflate it once.
type sociDecoder struct {
	z     *soci.Ztoc
	heads []entryHead // the zTOC's entries, in tar order

	mu       sync.Mutex
	spans    []*spanData // most recently used last
	prefixes []rawPrefix // compressed span prefixes entry checks fetched (prefix.go), most recent last

	entryState // VerifyEntry's (entry.go)
}

// spanData is one span being inflated or inflated.
type spanData struct {
	i    int
	done chan struct{}
	data []byte
	err  error
}

// sociSpanCache is how many inflated spans a layer keeps (up to 4 MiB and
// a little more each at the default span size).
const sociSpanCache = 4

// newSociDecoder keeps of z what decoding needs: not its entries (the
// index has them), and the windows copied out of the zTOC's buffer, which
// is dropped.
// idx, the index built from z, is what VerifyEntry checks (nil: no entry
// checks).
func newSociDecoder(z *soci.Ztoc, idx layer.Index) *sociDecoder {
	small := *z
	small.Files = nil
	heads := make([]entryHead, 0, len(z.Files))
	for _, f := range z.Files {
		heads = append(heads, newEntryHead(&f))
	}
	var bind entryBinding
	if idx != nil {
		bind = bindEntries(z, idx)
	}
	small.Checkpoints.List = slices.Clone(z.Checkpoints.List)
	windows := make([]byte, 0, len(z.Checkpoints.List)*soci.WindowSize)
	for i := range small.Checkpoints.List {
		c := &small.Checkpoints.List[i]
		windows = append(windows, c.Window...)
		c.Window = windows[len(windows)-len(c.Window) : len(windows) : len(windows)]
	}
	z = &small
	return &sociDecoder{z: z, heads: heads, entryState: entryState{bind: bind, vspans: map[int]*spanCheck{}}}
}

// Decode implements layer.Decoder: c.Span is the span the chunk lies in.
func (d *sociDecoder) Decode(dst []byte, c *layer.Chunk, raw []byte) ([]byte, error) {
	i := c.Span
	if i < 0 || i >= len(d.z.SpanDigests) {
		return nil, fmt.Errorf("%w: chunk at %d is in span %d of %d", soci.ErrInvalid, c.Offset, i, len(d.z.SpanDigests))
	}
	if s, e := d.z.SpanRange(i); s != c.Offset || e != c.End {
		return nil, fmt.Errorf("%w: chunk at %d+%d is not span %d's range %d+%d", soci.ErrInvalid, c.Offset, c.End-c.Offset, i, s, e-s)
	}
	if os, oe := d.z.SpanOut(i); c.InnerOffset == 0 && c.Size == oe-os {
		// the chunk is the whole span (a large file's middle): no other
		// chunk needs it, so it is neither cached nor copied
		return d.inflate(i, raw)
	}
	data, err := d.span(i, raw)
	if err != nil {
		return nil, err
	}
	if c.InnerOffset < 0 || c.Size < 0 || c.InnerOffset+c.Size > int64(len(data)) {
		return nil, fmt.Errorf("%w: chunk %d+%d past span %d (%d bytes)", soci.ErrInvalid, c.InnerOffset, c.Size, i, len(data))
	}
	return append(dst[:0], data[c.InnerOffset:c.InnerOffset+c.Size]...), nil
}

// span returns span i's uncompressed bytes: from the cache, from another
// caller inflating it, or inflated here from raw.
func (d *sociDecoder) span(i int, raw []byte) ([]byte, error) {
	d.mu.Lock()
	for k, s := range d.spans {
		if s.i != i {
			continue
		}
		d.spans = append(append(d.spans[:k:k], d.spans[k+1:]...), s) // most recent last
		d.mu.Unlock()
		<-s.done
		if s.err == nil {
			return s.data, nil
		}
		// the other caller's bytes were wrong: these may be right
		return d.inflate(i, raw)
	}
	s := &spanData{i: i, done: make(chan struct{})}
	if len(d.spans) >= sociSpanCache {
		d.spans = d.spans[1:]
	}
	d.spans = append(d.spans, s)
	d.mu.Unlock()
	// deferred, so that a panicking inflate (contained by the caller)
	// does not leave the span's other callers waiting
	s.err = errSpanAbandoned
	defer func() {
		if s.err != nil {
			d.mu.Lock()
			d.spans = slices.DeleteFunc(d.spans, func(x *spanData) bool { return x == s })
			d.mu.Unlock()
		}
		close(s.done)
	}()
	s.data, s.err = d.inflate(i, raw)
	return s.data, s.err
}

// errSpanAbandoned: the caller inflating a span stopped without an
// outcome (it panicked); whoever waited for it inflates the span itself.
var errSpanAbandoned = errors.New("soci/lazy: span inflate abandoned")

// inflate verifies raw against span i's digest and inflates the span.
func (d *sociDecoder) inflate(i int, raw []byte) ([]byte, error) {
	s, e := d.z.SpanRange(i)
	if int64(len(raw)) != e-s {
		return nil, fmt.Errorf("%w: span %d: %d bytes, want %d", soci.ErrVerify, i, len(raw), e-s)
	}
	sum := sha256.Sum256(raw)
	if got := digest.NewDigestFromBytes(digest.SHA256, sum[:]); got != d.z.SpanDigests[i] {
		return nil, fmt.Errorf("%w: span %d (%d+%d): digest %s, the zTOC says %s", soci.ErrVerify, i, s, e-s, got, d.z.SpanDigests[i])
	}
	cp := d.z.Checkpoints.List[i]
	r, err := zran.Resume(bytes.NewReader(raw), zran.Checkpoint{In: cp.In, Bits: cp.Bits, Out: cp.Out, Window: cp.Window})
	if err != nil {
		return nil, fmt.Errorf("%w: span %d: checkpoint: %w", soci.ErrVerify, i, err)
	}
	os, oe := d.z.SpanOut(i)
	data := make([]byte, oe-os)
	if _, err := io.ReadFull(r, data); err != nil {
		// the bytes are the ones the digest names: the checkpoint is wrong
		return nil, fmt.Errorf("%w: %w: span %d does not inflate from its checkpoint: %w", soci.ErrVerify, layer.ErrMismatch, i, err)
	}
	if err := checkHeads(d.heads, data, os); err != nil {
		return nil, fmt.Errorf("%w: %w: span %d: %w", soci.ErrVerify, layer.ErrMismatch, i, err)
	}
	d.precheck(i, data)
	return data, nil
}
