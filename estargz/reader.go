package estargz

import (
	"archive/tar"
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"

	"github.com/klauspost/compress/gzip"
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
	footer    int
	byName    map[string]int
}

// Open reads the footer and TOC of the blob in sr, verifies and validates the
// TOC, and returns a Reader. It reads only the blob's tail, with at most
// two ReadAt calls: the last DefaultTailReadSize bytes (or the WithTail
// bytes, without a call), then, when the TOC starts before those, the rest
// of the TOC member in one piece. Each ReadAt of a remote blob is a round
// trip; reading the compressed TOC through a small buffer would be one per
// few KiB.
func Open(sr *io.SectionReader, opts ...OpenOption) (*Reader, error) {
	cfg := openConfig{maxTOCSize: DefaultMaxTOCSize, tailSize: DefaultTailReadSize}
	for _, o := range opts {
		o(&cfg)
	}
	if cfg.tocDigest == "" && !cfg.unverified {
		return nil, ErrNoTOCDigest
	}
	if cfg.tocDigest != "" {
		if err := cfg.tocDigest.Validate(); err != nil {
			return nil, fmt.Errorf("%w: TOC digest %q: %v", ErrFormat, cfg.tocDigest, err)
		}
	}
	size := sr.Size()
	if size < LegacyFooterSize {
		return nil, fmt.Errorf("%w: blob is %d bytes, smaller than a footer", ErrFormat, size)
	}
	tail := cfg.tail
	switch {
	case tail == nil:
		tail = make([]byte, min(size, max(cfg.tailSize, FooterSize)))
		if err := readFull(sr, tail, size-int64(len(tail))); err != nil {
			return nil, fmt.Errorf("estargz: reading footer: %w", err)
		}
	case int64(len(tail)) > size:
		return nil, fmt.Errorf("%w: tail of %d bytes given for a %d-byte blob", ErrFormat, len(tail), size)
	}
	tocOff, footerSize, err := ParseFooter(tail)
	if err != nil {
		return nil, err
	}
	tocEnd := size - int64(footerSize)
	if tocOff >= tocEnd {
		return nil, fmt.Errorf("%w: footer: TOC offset %d outside the %d-byte blob", ErrFormat, tocOff, size)
	}
	member, err := tocRegion(sr, tail[:len(tail)-footerSize], tocOff, tocEnd, cfg.maxTOCSize)
	if err != nil {
		return nil, err
	}
	tocJSON, err := ReadTOCMember(member, cfg.maxTOCSize)
	if err != nil {
		return nil, err
	}
	r, err := parseTOC(tocJSON, tocOff, cfg)
	if err != nil {
		return nil, err
	}
	r.sr, r.footer = sr, footerSize
	return r, nil
}

// tocRegion returns a reader of the blob's bytes [tocOff, tocEnd), of which
// have (the tail without its footer) are the last ones. What is missing is
// read with one ReadAt into memory, unless it is far larger than any TOC
// within maxTOCSize could compress to (a member followed by junk): then it
// is streamed through a large buffer rather than allocated.
func tocRegion(sr *io.SectionReader, have []byte, tocOff, tocEnd, maxTOCSize int64) (io.Reader, error) {
	haveOff := tocEnd - int64(len(have))
	if tocOff >= haveOff {
		return bytes.NewReader(have[tocOff-haveOff:]), nil
	}
	missing := haveOff - tocOff
	// deflate's stored blocks and the tar framing add little; leave room
	if limit := maxTOCSize + maxTOCSize/16 + 1<<20; missing > limit {
		head := bufio.NewReaderSize(io.NewSectionReader(sr, tocOff, missing), 1<<20)
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

// ReadTOCMember decompresses the TOC gzip member in r and returns the TOC
// JSON, reading at most maxSize bytes of it.
func ReadTOCMember(r io.Reader, maxSize int64) ([]byte, error) {
	zr, err := gzip.NewReader(r)
	if err != nil {
		return nil, fmt.Errorf("%w: TOC: gzip: %v", ErrFormat, err)
	}
	zr.Multistream(false)
	tr := tar.NewReader(zr)
	h, err := tr.Next()
	if err != nil {
		return nil, fmt.Errorf("%w: TOC: tar: %v", ErrFormat, err)
	}
	if h.Name != TOCTarName || (h.Typeflag != tar.TypeReg && h.Typeflag != tar.TypeRegA) {
		return nil, fmt.Errorf("%w: TOC: tar entry %q, want %q", ErrFormat, h.Name, TOCTarName)
	}
	if h.Size > maxSize {
		return nil, fmt.Errorf("%w: TOC is %d bytes, cap %d", ErrTooLarge, h.Size, maxSize)
	}
	b := make([]byte, h.Size)
	if _, err := io.ReadFull(tr, b); err != nil {
		return nil, fmt.Errorf("%w: TOC: reading %d bytes: %v", ErrFormat, h.Size, err)
	}
	return b, nil
}

func parseTOC(tocJSON []byte, tocOff int64, cfg openConfig) (*Reader, error) {
	got := digest.SHA256.FromBytes(tocJSON)
	if cfg.tocDigest != "" && got != cfg.tocDigest {
		return nil, fmt.Errorf("%w: TOC digest %s, annotation says %s", ErrVerify, got, cfg.tocDigest)
	}
	var j jsonTOC
	if err := json.Unmarshal(tocJSON, &j); err != nil {
		return nil, fmt.Errorf("%w: TOC JSON: %v", ErrFormat, err)
	}
	toc, byName, err := buildTOC(&j, tocOff)
	if err != nil {
		return nil, err
	}
	return &Reader{toc: toc, tocDigest: got, byName: byName}, nil
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
	return c.decodeFrom(dst, io.NewSectionReader(r.sr, c.Offset, c.CompressedSize()))
}

// OpenFile returns a verified reader of a regular file's content. A
// hardlink opens its target.
func (r *Reader) OpenFile(name string) (*File, error) {
	e, err := r.Lookup(name)
	if err != nil {
		return nil, err
	}
	if e.Type == TypeHardlink {
		if e, err = r.Lookup(e.LinkName); err != nil {
			return nil, err
		}
	}
	if e.Type != TypeReg {
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
		c := f.e.ChunkAt(off)
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

// ChunkAt returns the chunk holding file offset off (0 <= off < Size).
func (e *Entry) ChunkAt(off int64) *Chunk {
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
