package estargz

import (
	"archive/tar"
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"

	"github.com/klauspost/compress/gzip"
	"github.com/lazysnap/lazysnap/layer"
	"github.com/opencontainers/go-digest"
)

// DefaultMaxTOCSize caps the uncompressed TOC JSON: 256 MiB, room for about
// a million entries at ~250 bytes each.
const DefaultMaxTOCSize = 256 << 20

// OpenOption configures Open.
type OpenOption func(*openConfig)

// DefaultTailReadSize is how many bytes at the end of a blob Open reads
// in its first ReadAt when it is not given the tail (WithTail): enough for
// the footer and the whole TOC of a small layer.
const DefaultTailReadSize = 64 << 10

type openConfig struct {
	tocDigest  digest.Digest
	unverified bool
	maxTOCSize int64
	tail       []byte
	tailSize   int64
	maxEntries int
}

// WithTOCDigest makes Open verify the TOC JSON against d, the value of the
// layer's TOCJSONDigestAnnotation.
func WithTOCDigest(d digest.Digest) OpenOption {
	return func(c *openConfig) { c.tocDigest = d }
}

// WithoutTOCVerification lets Open accept a TOC no digest vouches for. Chunks
// are still verified against the TOC; use it only for blobs from a trusted
// source (one this process wrote) or for inspection.
func WithoutTOCVerification() OpenOption {
	return func(c *openConfig) { c.unverified = true }
}

// WithMaxTOCSize caps the uncompressed TOC JSON (DefaultMaxTOCSize).
func WithMaxTOCSize(n int64) OpenOption {
	return func(c *openConfig) { c.maxTOCSize = n }
}

// DefaultMaxEntries caps the entries of a TOC (chunk entries included):
// 4 Mi. The largest real layers have a few hundred thousand files (a
// Debian tree has about 100 000); an index holds about 130 bytes per entry,
// so the cap bounds one layer's index near 550 MB. Past it a layer is
// better pulled than mounted.
const DefaultMaxEntries = 4 << 20

// WithMaxEntries caps the number of TOC entries (DefaultMaxEntries); a TOC
// with more fails with ErrTooManyEntries.
func WithMaxEntries(n int) OpenOption {
	return func(c *openConfig) { c.maxEntries = n }
}

// WithTail hands Open the last len(tail) bytes of the blob, read already
// (for example together with the blob's size), so that Open reads only
// what lies before them, if anything. tail must hold at least the footer.
func WithTail(tail []byte) OpenOption {
	return func(c *openConfig) { c.tail = tail }
}

// WithTailReadSize sets how many bytes at the end of the blob Open reads
// in its first ReadAt (DefaultTailReadSize; at least the footer is read).
func WithTailReadSize(n int64) OpenOption {
	return func(c *openConfig) { c.tailSize = n }
}

// Reader is an opened, validated eStargz blob.
type Reader struct {
	sr        *io.SectionReader
	toc       *TOC
	tocDigest digest.Digest
	byName    map[string]int
}

// Open reads the footer and TOC of the blob in sr, verifies and validates the
// TOC, and returns a Reader. It reads only the blob's tail, with at most
// two ReadAt calls for a compressed TOC of up to 8 MiB (maxHeldTOC): the last
// DefaultTailReadSize bytes (or the WithTail bytes, without a call), then,
// when the TOC starts before those, the rest of the TOC member in one
// piece. Each ReadAt of a remote blob is a round trip; reading the
// compressed TOC through a small buffer would be one per few KiB. A larger
// TOC is streamed in reads of 4 MiB.
func Open(sr *io.SectionReader, opts ...OpenOption) (*Reader, error) {
	cfg, tocOff, member, err := openMember(sr, opts)
	if err != nil {
		return nil, err
	}
	c := &collector{byName: map[string]int{}}
	info, err := decodeMember(member, tocOff, c, cfg)
	if err != nil {
		return nil, err
	}
	c.toc.Version, c.toc.Offset, c.toc.PrefetchEnd = info.Version, info.Offset, info.PrefetchEnd
	return &Reader{sr: sr, toc: &c.toc, tocDigest: info.Digest, byName: c.byName}, nil
}

// TOCInfo describes a TOC that DecodeTOC decoded.
type TOCInfo struct {
	// Version, Offset and PrefetchEnd are as in TOC.
	Version     int
	Offset      int64
	PrefetchEnd int64
	// Digest is the sha256 of the TOC JSON.
	Digest digest.Digest
	// Entries and Chunks count what the sink was given (Entries in IDs).
	Entries, Chunks int
}

// LayerInfo is what i tells of its layer besides its entries.
func (i TOCInfo) LayerInfo() layer.Info {
	return layer.Info{PrefetchEnd: i.PrefetchEnd, DataEnd: i.Offset}
}

// DecodeTOC reads the footer and TOC of the blob in sr as Open does, with
// the same options and checks, but hands the validated entries to sink as
// they are decompressed and decoded instead of keeping them: its memory
// does not grow with the TOC (beyond a compact name table). The TOC's
// digest is checked over its exact bytes once they have all been read: a
// sink must not use what it was given before DecodeTOC returns without an
// error.
func DecodeTOC(sr *io.SectionReader, sink TOCSink, opts ...OpenOption) (TOCInfo, error) {
	cfg, tocOff, member, err := openMember(sr, opts)
	if err != nil {
		return TOCInfo{}, err
	}
	return decodeMember(member, tocOff, sink, cfg)
}

// openMember reads the footer and returns a reader of the TOC member.
func openMember(sr *io.SectionReader, opts []OpenOption) (openConfig, int64, io.Reader, error) {
	cfg, err := newOpenConfig(opts)
	if err != nil {
		return cfg, 0, nil, err
	}
	size := sr.Size()
	if size < LegacyFooterSize {
		return cfg, 0, nil, fmt.Errorf("%w: blob is %d bytes, smaller than a footer", ErrFormat, size)
	}
	tail := cfg.tail
	switch {
	case tail == nil:
		tail = make([]byte, min(size, max(cfg.tailSize, FooterSize)))
		if err := readFull(sr, tail, size-int64(len(tail))); err != nil {
			return cfg, 0, nil, fmt.Errorf("estargz: reading footer: %w", err)
		}
	case int64(len(tail)) > size:
		return cfg, 0, nil, fmt.Errorf("%w: tail of %d bytes given for a %d-byte blob", ErrFormat, len(tail), size)
	}
	tocOff, footerSize, err := ParseFooter(tail)
	if err != nil {
		return cfg, 0, nil, err
	}
	tocEnd := size - int64(footerSize)
	if tocOff >= tocEnd {
		return cfg, 0, nil, fmt.Errorf("%w: footer: TOC offset %d outside the %d-byte blob", ErrFormat, tocOff, size)
	}
	member, err := tocRegion(sr, tail[:len(tail)-footerSize], tocOff, tocEnd)
	return cfg, tocOff, member, err
}

// newOpenConfig applies opts and checks that they say how the TOC is
// verified.
func newOpenConfig(opts []OpenOption) (openConfig, error) {
	cfg := openConfig{maxTOCSize: DefaultMaxTOCSize, tailSize: DefaultTailReadSize, maxEntries: DefaultMaxEntries}
	for _, o := range opts {
		o(&cfg)
	}
	if cfg.tocDigest == "" && !cfg.unverified {
		return cfg, ErrNoTOCDigest
	}
	if cfg.tocDigest != "" {
		if err := cfg.tocDigest.Validate(); err != nil {
			return cfg, fmt.Errorf("%w: TOC digest %q: %w", ErrFormat, cfg.tocDigest, err)
		}
	}
	return cfg, nil
}

// maxHeldTOC is the most of a compressed TOC that Open reads into memory
// in one ReadAt: 8 MiB, the compressed TOC of about 100 000 entries (a
// Debian tree's) at ~70 bytes each with random digests. A larger one is
// streamed in reads of tocStreamRead, so that decoding holds a fixed
// buffer rather than ~70 bytes per entry of compressed TOC next to the
// index being built; it costs one round trip per tocStreamRead instead of
// one in all (a 1M-entry TOC of ~70 MiB takes ~18), small beside the
// seconds its decoding takes.
const maxHeldTOC = 8 << 20

// tocStreamRead is the read size of a streamed TOC: 4 MiB, half
// maxHeldTOC, so that no streamed TOC takes fewer than two reads.
const tocStreamRead = maxHeldTOC / 2

// tocRegion returns a reader of the blob's bytes [tocOff, tocEnd), of which
// have (the tail without its footer) are the last ones. What is missing is
// read with one ReadAt into memory when it is at most maxHeldTOC bytes,
// else streamed from sr through a tocStreamRead buffer.
func tocRegion(sr *io.SectionReader, have []byte, tocOff, tocEnd int64) (io.Reader, error) {
	haveOff := tocEnd - int64(len(have))
	if tocOff >= haveOff {
		return bytes.NewReader(have[tocOff-haveOff:]), nil
	}
	missing := haveOff - tocOff
	if missing > maxHeldTOC {
		head := bufio.NewReaderSize(io.NewSectionReader(sr, tocOff, missing), tocStreamRead)
		return io.MultiReader(head, bytes.NewReader(have)), nil
	}
	buf := make([]byte, missing+int64(len(have)))
	if err := readFull(sr, buf[:missing], tocOff); err != nil {
		return nil, fmt.Errorf("estargz: reading TOC: %w", err)
	}
	copy(buf[missing:], have)
	return bytes.NewReader(buf), nil
}

// readFull is one ReadAt that must fill p; io.EOF with p filled (allowed
// at the end of the blob) is success.
func readFull(r io.ReaderAt, p []byte, off int64) error {
	n, err := r.ReadAt(p, off)
	if n == len(p) {
		return nil
	}
	return err
}

// tocTar opens the TOC gzip member in r and returns a reader of the TOC
// JSON (the tar entry's content) and its size, at most maxSize.
func tocTar(r io.Reader, maxSize int64) (io.Reader, int64, error) {
	zr, err := gzip.NewReader(r)
	if err != nil {
		return nil, 0, fmt.Errorf("%w: TOC: gzip: %w", ErrFormat, err)
	}
	zr.Multistream(false)
	tr := tar.NewReader(zr)
	h, err := tr.Next()
	if err != nil {
		return nil, 0, fmt.Errorf("%w: TOC: tar: %w", ErrFormat, err)
	}
	if h.Name != TOCTarName || (h.Typeflag != tar.TypeReg && h.Typeflag != tar.TypeRegA) {
		return nil, 0, fmt.Errorf("%w: TOC: tar entry %q, want %q", ErrFormat, h.Name, TOCTarName)
	}
	if h.Size > maxSize {
		return nil, 0, fmt.Errorf("%w: TOC is %d bytes, cap %d", ErrTooLarge, h.Size, maxSize)
	}
	return tr, h.Size, nil
}

// ReadTOCMember decompresses the TOC gzip member in r and returns the TOC
// JSON, reading at most maxSize bytes of it. An error reading r is
// returned as itself (ReadTracker).
func ReadTOCMember(r io.Reader, maxSize int64) ([]byte, error) {
	src := NewReadTracker(r)
	b, err := readTOCMember(src, maxSize)
	if rerr := src.Err(); rerr != nil {
		return nil, fmt.Errorf("estargz: reading TOC: %w", rerr)
	}
	return b, err
}

func readTOCMember(r io.Reader, maxSize int64) ([]byte, error) {
	tr, size, err := tocTar(r, maxSize)
	if err != nil {
		return nil, err
	}
	b := make([]byte, size)
	if _, err := io.ReadFull(tr, b); err != nil {
		return nil, fmt.Errorf("%w: TOC: reading %d bytes: %w", ErrFormat, size, err)
	}
	return b, nil
}

// decodeMember decodes the TOC member in r into sink, hashing the JSON as
// it goes. A TOC whose digest does not match fails with ErrVerify whatever
// else is wrong with it: the rest of it is read and hashed after an error.
// An error reading r (the blob) is returned as itself, whatever the gzip,
// tar and JSON decoders made of it (ReadTracker).
func decodeMember(r io.Reader, tocOff int64, sink TOCSink, cfg openConfig) (TOCInfo, error) {
	src := NewReadTracker(r)
	info, err := func() (TOCInfo, error) {
		tr, size, err := tocTar(src, cfg.maxTOCSize)
		if err != nil {
			return TOCInfo{}, err
		}
		return decodeJSON(tr, size, tocOff, sink, cfg)
	}()
	if rerr := src.Err(); rerr != nil {
		return TOCInfo{}, fmt.Errorf("estargz: reading TOC: %w", rerr)
	}
	return info, err
}

// ReadTracker reads from a blob for a decoder (gzip, tar, zstd, the TOC's
// JSON) and keeps the first read error other than io.EOF, returning it
// again from every later Read. The decoders above it report a failed read
// in their own ways (a truncated stream, a corrupt one), so a format's
// decoder asks the tracker instead: when Err is set, the blob could not
// be read (an I/O error, returned as itself, wrapped with %w); only when
// it is not are the bytes malformed (ErrFormat). Keeping the error also
// stops a decoder from reading on past it (a second request that may
// fail again, or succeed and make the TOC look corrupt).
type ReadTracker struct {
	r   io.Reader
	err error
}

// NewReadTracker returns a ReadTracker reading from r.
func NewReadTracker(r io.Reader) *ReadTracker { return &ReadTracker{r: r} }

func (t *ReadTracker) Read(p []byte) (int, error) {
	if t.err != nil {
		return 0, t.err
	}
	n, err := t.r.Read(p)
	if err != nil && err != io.EOF {
		t.err = err
	}
	return n, err
}

// Err is the first read error other than io.EOF, nil if none.
func (t *ReadTracker) Err() error { return t.err }

// DecodeTOCJSON decodes a TOC JSON of size bytes read from r, of a blob
// whose data (every chunk) lies before dataEnd, into sink, with the checks
// and options of DecodeTOC (the tail options aside): the decoder of a
// format that shares eStargz's TOC but stores it otherwise (zstd:chunked,
// whose own fields it ignores). A file in a single chunk whose entry has
// no chunkDigest is verified against its digest.
func DecodeTOCJSON(r io.Reader, size, dataEnd int64, sink TOCSink, opts ...OpenOption) (TOCInfo, error) {
	cfg, err := newOpenConfig(opts)
	if err != nil {
		return TOCInfo{}, err
	}
	if size < 0 || size > cfg.maxTOCSize {
		return TOCInfo{}, fmt.Errorf("%w: TOC is %d bytes, cap %d", ErrTooLarge, size, cfg.maxTOCSize)
	}
	return decodeJSON(r, size, dataEnd, sink, cfg)
}

// decodeJSON decodes the size bytes of TOC JSON in tr; see decodeMember.
func decodeJSON(tr io.Reader, size, tocOff int64, sink TOCSink, cfg openConfig) (TOCInfo, error) {
	h := digest.SHA256.Digester()
	body := &countingReader{r: io.TeeReader(io.LimitReader(tr, size), h.Hash())}
	b := newTOCBuilder(sink, tocOff)
	entries := 0
	version, derr := 0, b.start()
	if derr == nil {
		reserved := size < reserveMinTOC
		version, derr = decodeTOCJSON(body, func(je *jsonEntry, off int64) error {
			if entries++; entries > cfg.maxEntries {
				return fmt.Errorf("%w: more than %d", ErrTooManyEntries, cfg.maxEntries)
			}
			if je == nil {
				return fmt.Errorf("%w: TOC entry %d is null", ErrFormat, entries-1)
			}
			if err := b.add(je); err != nil {
				return fmt.Errorf("TOC entry %d (%q): %w", entries-1, je.Name, err)
			}
			if !reserved && off >= max(size/reserveSample, 64<<10) {
				reserved = true
				b.reserve(off, size, cfg.maxEntries)
			}
			return nil
		})
	}
	if derr == nil && version != 1 {
		derr = fmt.Errorf("%w: TOC version %d, want 1", ErrFormat, version)
	}
	if derr == nil {
		derr = b.finish()
	}
	if _, err := io.Copy(io.Discard, body); err != nil && derr == nil {
		derr = fmt.Errorf("%w: TOC: %w", ErrFormat, err)
	}
	if body.n != size {
		return TOCInfo{}, fmt.Errorf("%w: TOC: reading %d bytes: %w", ErrFormat, size, io.ErrUnexpectedEOF)
	}
	got := h.Digest()
	if cfg.tocDigest != "" && got != cfg.tocDigest {
		return TOCInfo{}, fmt.Errorf("%w: TOC digest %s, annotation says %s", ErrVerify, got, cfg.tocDigest)
	}
	if derr != nil {
		return TOCInfo{}, derr
	}
	return TOCInfo{Version: version, Offset: tocOff, PrefetchEnd: b.prefetchEnd, Digest: got,
		Entries: b.names.len(), Chunks: len(b.chunkOff)}, nil
}

type countingReader struct {
	r io.Reader
	n int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}

// collector is the TOCSink of Open: it keeps every entry.
type collector struct {
	toc    TOC
	byName map[string]int
	chunks []*Chunk
}

func (c *collector) Entry(id, parent, link int, base string, e *Entry) error {
	v := *e
	v.Chunks = append([]Chunk(nil), e.Chunks...)
	if id < len(c.toc.Entries) {
		c.toc.Entries[id] = v
		return nil
	}
	c.byName[v.Name] = id
	c.toc.Entries = append(c.toc.Entries, v)
	return nil
}

func (c *collector) ChunkEnd(i int, end int64) {
	if i == 0 {
		for j := range c.toc.Entries {
			for k := range c.toc.Entries[j].Chunks {
				c.chunks = append(c.chunks, &c.toc.Entries[j].Chunks[k])
			}
		}
	}
	c.chunks[i].End = end
}

// TOC returns the validated TOC. Callers must not modify it.
func (r *Reader) TOC() *TOC { return r.toc }

// TOCDigest is the sha256 of the TOC JSON.
func (r *Reader) TOCDigest() digest.Digest { return r.tocDigest }

// Lookup returns the entry with the given name (cleaned as tar names are).
func (r *Reader) Lookup(name string) (*Entry, error) {
	n, err := cleanName(name)
	if err != nil {
		return nil, err
	}
	i, ok := r.byName[n]
	if !ok {
		return nil, fmt.Errorf("%w: %q", ErrNotFound, name)
	}
	return &r.toc.Entries[i], nil
}

// ReadChunk fetches c's compressed range from the blob, verifies it and
// returns the chunk's bytes (in dst's backing array when it has room).
func (r *Reader) ReadChunk(ctx context.Context, c *Chunk, dst []byte) ([]byte, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	return decodeFrom(dst, c, io.NewSectionReader(r.sr, c.Offset, c.CompressedSize()))
}

// OpenFile returns a verified reader of a regular file's content. A
// hardlink opens its target.
func (r *Reader) OpenFile(name string) (*File, error) {
	e, err := r.Lookup(name)
	if err != nil {
		return nil, err
	}
	if e.Type == layer.TypeHardlink {
		if e, err = r.Lookup(e.LinkName); err != nil {
			return nil, err
		}
	}
	if e.Type != layer.TypeReg {
		return nil, fmt.Errorf("%w: %q is a %s, not a regular file", ErrFormat, name, e.Type)
	}
	return &File{r: r, e: e}, nil
}

// File reads a regular file's content chunk by chunk, verifying each chunk.
type File struct {
	r *Reader
	e *Entry
}

var _ io.ReaderAt = (*File)(nil)

// Size is the file's size.
func (f *File) Size() int64 { return f.e.Size }

// ReadAt implements io.ReaderAt.
func (f *File) ReadAt(p []byte, off int64) (int, error) {
	return f.ReadAtContext(context.Background(), p, off)
}

// ReadAtContext reads len(p) bytes at off, like io.ReaderAt, fetching and
// verifying every chunk it touches.
func (f *File) ReadAtContext(ctx context.Context, p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, fmt.Errorf("estargz: negative offset %d", off)
	}
	n := 0
	var buf []byte
	for n < len(p) && off < f.e.Size {
		c := chunkAt(f.e, off)
		data, err := f.r.ReadChunk(ctx, c, buf)
		if err != nil {
			return n, err
		}
		buf = data
		m := copy(p[n:], data[off-c.FileOffset:])
		n += m
		off += int64(m)
	}
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

// chunkAt returns the chunk of e holding file offset off (0 <= off < Size).
func chunkAt(e *Entry, off int64) *Chunk {
	lo, hi := 0, len(e.Chunks)
	for lo+1 < hi {
		mid := (lo + hi) / 2
		if e.Chunks[mid].FileOffset <= off {
			lo = mid
		} else {
			hi = mid
		}
	}
	return &e.Chunks[lo]
}
