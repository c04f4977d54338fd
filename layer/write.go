package layer

import (
	"context"
	"io"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// The write side of a format, beside the read side above: a Writer
// writes one layer of its format, and convert lists the Writers (its
// writers, the one place that knows them all) as remote lists the
// Formats. A format's package asserts it at compile time, as
//
//	var _ layer.Writer = Writer{}

// Input is what a Writer's Write reads, and so what it writes.
type Input int

const (
	// InputTar: the layer's uncompressed tar. Write writes a blob of
	// the format that replaces the layer (a new digest and diff ID):
	// eStargz, zstd:chunked.
	InputTar Input = iota
	// InputBlob: the layer's blob as it is, which stays the layer.
	// Write writes an index of it, stored beside it: SOCI's zTOC.
	InputBlob
)

// Writer is a layer format that can be written.
type Writer interface {
	// Name names the format, as its Format's Name does ("estargz").
	Name() string
	// Input says what Write reads.
	Input() Input
	// Skip says why the layer desc is not written ("" if it is): it is
	// of this format already (a converting writer's layer is kept as
	// it is), or a blob this indexing writer cannot index.
	Skip(desc ocispec.Descriptor) string
	// Annotations are the keys of the layer annotations the format
	// writes (Written.Desc's, for InputTar): a layer written in another
	// format drops them.
	Annotations() []string
	// Write reads src, the tar or blob (per Input) of the layer desc,
	// and writes the format's blob to dst, or an error. An InputBlob
	// writer reads src in order from its start, and need not read it to
	// its end; its caller checks the blob against desc's digest.
	Write(ctx context.Context, dst io.Writer, src *io.SectionReader, desc ocispec.Descriptor, opts WriteOptions) (*Written, error)
}

// WriteOptions configures a Writer's Write. Zero values are the format's
// defaults; a format ignores what it has no use for.
type WriteOptions struct {
	// ChunkSize is the largest chunk of a file (eStargz, zstd:chunked)
	// or the uncompressed span size (SOCI).
	ChunkSize int64
	// Level is the compression level, on the format's own scale (gzip
	// 1 to 9, zstd 1 to 22).
	Level int
	// Prioritized files are placed first, for prefetch.
	Prioritized []string
	// BuildTool is recorded where the format records one (SOCI).
	BuildTool string
}

// Written describes what a Writer wrote.
type Written struct {
	// Desc describes the blob written: media type, digest, size, and
	// the annotations that locate and vouch for its index (an InputTar
	// writer's: the new layer's descriptor).
	Desc ocispec.Descriptor
	// DiffID is the digest of the written layer's tar (InputTar; empty
	// for an index, whose layer keeps its diff ID).
	DiffID digest.Digest
	// UncompressedSize is the size of the layer's tar.
	UncompressedSize int64
	// TOCDigest is the digest that vouches for the written index (the
	// eStargz TOC's, the zstd:chunked manifest's, the zTOC's).
	TOCDigest digest.Digest
	// Files and Chunks count the entries and the chunks (SOCI's spans)
	// of the index, where the format counts them (else 0).
	Files, Chunks int
	// MissingPrioritized lists the prioritized files the layer lacks.
	MissingPrioritized []string
}
