package estargz

import (
	"bytes"
	"fmt"
	"io"

	"github.com/klauspost/compress/gzip"
	"github.com/lazysnap/lazysnap/layer"
	"github.com/opencontainers/go-digest"
)

// Chunk locates one verified unit of a regular file's content in the
// blob: layer.Chunk, whose Offset is the compressed offset of the gzip
// member holding the chunk, End that of the next member that holds data
// (or of the TOC), and Digest the sha256 of the chunk's uncompressed
// bytes.
type Chunk = layer.Chunk

// Decoder decodes eStargz chunks: each is a gzip member (or part of one),
// verified against the sha256 of its uncompressed bytes (DecodeChunk).
type Decoder struct{}

var _ layer.Decoder = Decoder{}

// Decode implements layer.Decoder with DecodeChunk.
func (Decoder) Decode(dst []byte, c *Chunk, raw []byte) ([]byte, error) {
	return DecodeChunk(dst, c, raw)
}

// DecodeChunk decompresses and verifies chunk c from src, the blob's
// bytes starting at c.Offset (at least up to the end of the member;
// passing the range [Offset, End) always suffices). The chunk is written
// into dst's backing array if it has room, and returned only if its
// digest matches.
func DecodeChunk(dst []byte, c *Chunk, src []byte) ([]byte, error) {
	return decodeFrom(dst, c, bytes.NewReader(src))
}

func decodeFrom(dst []byte, c *Chunk, src io.Reader) ([]byte, error) {
	zr, err := gzip.NewReader(src)
	if err != nil {
		return nil, fmt.Errorf("%w: chunk at %d: gzip header: %v", ErrFormat, c.Offset, err)
	}
	zr.Multistream(false)
	return ReadVerified(dst, c, zr)
}

// ReadVerified reads chunk c from r, its member's decompressed bytes from
// the member's start, and returns it (in dst's backing array if it has
// room) only if its digest matches: the decoding that formats whose
// chunks are other compressed frames (zstd:chunked) share.
func ReadVerified(dst []byte, c *Chunk, r io.Reader) ([]byte, error) {
	if c.InnerOffset > 0 {
		n, err := io.CopyN(io.Discard, r, c.InnerOffset)
		if err != nil {
			return nil, fmt.Errorf("%w: chunk at %d: skipping %d inner bytes (got %d): %v", ErrFormat, c.Offset, c.InnerOffset, n, err)
		}
	}
	if int64(cap(dst)) >= c.Size {
		dst = dst[:c.Size]
	} else {
		dst = make([]byte, c.Size)
	}
	if _, err := io.ReadFull(r, dst); err != nil {
		return nil, fmt.Errorf("%w: chunk at %d: decompressing %d bytes: %v", ErrFormat, c.Offset, c.Size, err)
	}
	if got := digest.SHA256.FromBytes(dst); got != c.Digest {
		return nil, fmt.Errorf("%w: chunk at %d (file offset %d): digest %s, want %s", ErrVerify, c.Offset, c.FileOffset, got, c.Digest)
	}
	return dst, nil
}
