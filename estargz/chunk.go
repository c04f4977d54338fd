package estargz

import (
	"bytes"
	"fmt"
	"io"

	"github.com/klauspost/compress/gzip"
	"github.com/opencontainers/go-digest"
)

// Chunk locates one verified unit of a regular file's content in the blob.
type Chunk struct {
	// Offset is the compressed offset of the gzip member holding the chunk.
	Offset int64
	// End is the compressed offset of the next member that holds data (or of
	// the TOC): the range [Offset, End) always holds the whole member.
	End int64
	// InnerOffset is the chunk's uncompressed offset inside its member.
	InnerOffset int64
	// FileOffset is where the chunk starts in the file.
	FileOffset int64
	// Size is the chunk's uncompressed size, always > 0.
	Size int64
	// Digest is the sha256 of the chunk's uncompressed bytes.
	Digest digest.Digest
}

// CompressedSize is the number of blob bytes to fetch to decode c.
func (c *Chunk) CompressedSize() int64 { return c.End - c.Offset }

// Decode decompresses and verifies the chunk from src, the blob's bytes
// starting at c.Offset (at least up to the end of the member; passing the
// range [Offset, End) always suffices). The chunk is written into dst's
// backing array if it has room, and returned only if its digest matches.
func (c *Chunk) Decode(dst, src []byte) ([]byte, error) {
	return c.decodeFrom(dst, bytes.NewReader(src))
}

func (c *Chunk) decodeFrom(dst []byte, src io.Reader) ([]byte, error) {
	zr, err := gzip.NewReader(src)
	if err != nil {
		return nil, fmt.Errorf("%w: chunk at %d: gzip header: %v", ErrFormat, c.Offset, err)
	}
	zr.Multistream(false)
	return c.ReadVerified(dst, zr)
}

// ReadVerified reads the chunk from r, its member's decompressed bytes from
// the member's start, and returns it (in dst's backing array if it has
// room) only if its digest matches: the decoding that formats whose
// chunks are other compressed frames (zstd:chunked) share.
func (c *Chunk) ReadVerified(dst []byte, r io.Reader) ([]byte, error) {
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
