package layer

import "github.com/opencontainers/go-digest"

// Chunk locates one verified unit of a regular file's content in the
// blob.
type Chunk struct {
	// Offset is the compressed offset of the bytes to fetch to decode the
	// chunk (eStargz: the gzip member holding it; SOCI: its span).
	Offset int64
	// End is the compressed offset where those bytes end: the range
	// [Offset, End) always suffices to decode the chunk.
	End int64
	// InnerOffset is the chunk's uncompressed offset inside the decoded
	// range.
	InnerOffset int64
	// FileOffset is where the chunk starts in the file.
	FileOffset int64
	// Size is the chunk's uncompressed size, always > 0.
	Size int64
	// Digest is the sha256 of the chunk's uncompressed bytes, for formats
	// that verify each chunk alone (eStargz, zstd:chunked); "" for formats
	// that verify a larger unit (Span).
	Digest digest.Digest
	// Span numbers the unit of the blob the chunk lies in, for formats
	// whose chunks are decoded and verified as part of a larger unit (a
	// SOCI span, verified against the zTOC's span digest); 0 for others.
	Span int
}

// CompressedSize is the number of blob bytes to fetch to decode c.
func (c *Chunk) CompressedSize() int64 { return c.End - c.Offset }
