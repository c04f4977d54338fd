package zstdchunked

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"sync"

	"github.com/klauspost/compress/zstd"
	"github.com/lazysnap/lazysnap/estargz"
	"github.com/opencontainers/go-digest"
)

// DefaultTailReadSize is how many bytes at the end of a blob DecodeTOC
// reads first when it is not given the tail: the footer and, for a small
// layer, the whole TOC.
const DefaultTailReadSize = 64 << 10

// maxTOCRead is the read size of a TOC that starts before the tail: a TOC
// of up to 4 MiB compressed is one read, a larger one is streamed.
const maxTOCRead = 4 << 20

// maxDecoderMemory caps what a zstd frame may make the decoder allocate:
// its window and a whole-buffer decode. Real writers use windows of a few
// MiB; estargz.MaxChunkSpan caps a chunk.
const maxDecoderMemory = 2 * estargz.MaxChunkSpan

// Options configures DecodeTOC. The zero value needs a Digest.
type Options struct {
	// Digest vouches for the TOC: the layer's manifest-checksum (sha256 of
	// the compressed TOC) or eStargz's TOC digest (of the TOC JSON).
	Digest digest.Digest
	// Tail is the blob's last bytes, read already (at least the footer);
	// nil: DecodeTOC reads DefaultTailReadSize bytes.
	Tail []byte
	// MaxEntries caps the TOC's entries (estargz.DefaultMaxEntries).
	MaxEntries int
	// MaxTOCSize caps the uncompressed TOC (estargz.DefaultMaxTOCSize).
	MaxTOCSize int64
}

// DecodeTOC reads the footer and TOC of the blob in sr, verifies the TOC
// against o.Digest and hands its validated entries to sink (see
// estargz.DecodeTOC: the sink must not use them unless DecodeTOC returns
// no error). It reads the tail (unless given) and then, if the TOC starts
// before it, the rest of the TOC in one read.
func DecodeTOC(sr *io.SectionReader, sink estargz.TOCSink, o Options) (estargz.TOCInfo, Footer, error) {
	if err := o.Digest.Validate(); err != nil {
		return estargz.TOCInfo{}, Footer{}, fmt.Errorf("%w: TOC digest %q: %w", ErrFormat, o.Digest, err)
	}
	size := sr.Size()
	tail := o.Tail
	if tail == nil {
		tail = make([]byte, min(size, DefaultTailReadSize))
		if n, err := sr.ReadAt(tail, size-int64(len(tail))); n < len(tail) {
			return estargz.TOCInfo{}, Footer{}, fmt.Errorf("zstdchunked: reading footer: %w", err)
		}
	}
	f, _, err := ParseFooter(tail, size)
	if err != nil {
		return estargz.TOCInfo{}, Footer{}, err
	}
	maxTOC := cmp(o.MaxTOCSize, estargz.DefaultMaxTOCSize)
	if f.RawSize > maxTOC {
		return estargz.TOCInfo{}, f, fmt.Errorf("%w: TOC is %d bytes, cap %d", ErrTooLarge, f.RawSize, maxTOC)
	}
	h := digest.SHA256.Digester()
	// a failed read of the blob is returned as itself (by the Copy below,
	// which sees it again), not as the TOC decoder's ErrFormat
	src := estargz.NewReadTracker(region(sr, tail, f.Offset, f.Offset+f.Size))
	compressed := io.TeeReader(src, h.Hash())
	zr, err := zstd.NewReader(compressed, zstd.WithDecoderConcurrency(1), zstd.WithDecoderMaxMemory(uint64(maxTOC)+maxDecoderMemory))
	if err != nil {
		return estargz.TOCInfo{}, f, err
	}
	defer zr.Close()
	opts := []estargz.OpenOption{estargz.WithoutTOCVerification(), estargz.WithMaxTOCSize(maxTOC)}
	if o.MaxEntries > 0 {
		opts = append(opts, estargz.WithMaxEntries(o.MaxEntries))
	}
	info, derr := estargz.DecodeTOCJSON(zr, f.RawSize, f.DataEnd(), sink, opts...)
	if _, err := io.Copy(io.Discard, compressed); err != nil || src.Err() != nil {
		if src.Err() != nil {
			err = src.Err()
		}
		return estargz.TOCInfo{}, f, fmt.Errorf("zstdchunked: reading TOC: %w", err)
	}
	if h.Digest() != o.Digest && (derr != nil || info.Digest != o.Digest) {
		return estargz.TOCInfo{}, f, fmt.Errorf("%w: TOC digest %s (uncompressed %s), annotation says %s", ErrVerify, h.Digest(), info.Digest, o.Digest)
	}
	if derr != nil {
		return estargz.TOCInfo{}, f, wrapEstargz(derr)
	}
	return info, f, nil
}

// cmp is v, or def when v is not positive.
func cmp[T int | int64](v, def T) T {
	if v > 0 {
		return v
	}
	return def
}

// region reads the blob's bytes [off, end): those in tail from memory, the
// ones before it with reads of up to maxTOCRead bytes.
func region(sr *io.SectionReader, tail []byte, off, end int64) io.Reader {
	tailOff := sr.Size() - int64(len(tail))
	if off >= tailOff {
		return bytes.NewReader(tail[off-tailOff : end-tailOff])
	}
	if end <= tailOff {
		return bufio.NewReaderSize(io.NewSectionReader(sr, off, end-off), int(min(end-off, maxTOCRead)))
	}
	head := bufio.NewReaderSize(io.NewSectionReader(sr, off, tailOff-off), int(min(tailOff-off, maxTOCRead)))
	return io.MultiReader(head, bytes.NewReader(tail[:end-tailOff]))
}

// Decoder decodes and verifies chunks (it is a fetch.Decoder). Its zstd
// decoders are streaming ones, synchronous (no goroutines), pooled. The
// zero value is ready for use, and safe for concurrent use.
type Decoder struct {
	pool sync.Pool // *zstd.Decoder
}

// Decode implements fetch.Decoder: it decodes chunk c from raw (see
// decodeChunk) with a pooled decoder.
func (d *Decoder) Decode(dst []byte, c *estargz.Chunk, raw []byte) ([]byte, error) {
	zr, _ := d.pool.Get().(*zstd.Decoder)
	if zr == nil {
		var err error
		if zr, err = zstd.NewReader(nil, zstd.WithDecoderConcurrency(1), zstd.WithDecoderLowmem(true), zstd.WithDecoderMaxMemory(maxDecoderMemory)); err != nil {
			return nil, err
		}
	}
	defer func() {
		_ = zr.Reset(nil)
		d.pool.Put(zr)
	}()
	return decodeChunk(zr, dst, c, raw)
}

// decodeChunk decompresses chunk c from raw, the blob's bytes from
// c.Offset (its frame; passing [Offset, End) always suffices), and returns
// its c.Size bytes, in dst's backing array if it has room, only if their
// sha256 is c.Digest.
func decodeChunk(zr *zstd.Decoder, dst []byte, c *estargz.Chunk, raw []byte) ([]byte, error) {
	if c.Size <= 0 || c.InnerOffset < 0 || c.InnerOffset > estargz.MaxChunkSpan-c.Size {
		return nil, fmt.Errorf("%w: chunk at %d: %d bytes at %d of its frame", ErrFormat, c.Offset, c.Size, c.InnerOffset)
	}
	if err := zr.Reset(bytes.NewReader(raw)); err != nil {
		return nil, fmt.Errorf("%w: chunk at %d: %w", ErrFormat, c.Offset, err)
	}
	b, err := estargz.ReadVerified(dst, c, zr)
	return b, wrapEstargz(err)
}
