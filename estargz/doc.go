// Package estargz reads, verifies and writes eStargz layer blobs.
//
// # Concepts
//
// An eStargz blob is a gzip-compressed tar layer made of many gzip members
// concatenated: one member per tar header group and one per file chunk, so that
// any chunk can be decompressed on its own from its compressed offset. After
// the data comes one member holding a tar entry named "stargz.index.json" (the
// TOC: a JSON table of contents with every entry's metadata and the compressed
// offset and digest of every chunk), and last a 51-byte footer, an empty gzip
// member whose Extra field records the TOC's offset (see FooterSize). The whole
// blob still decompresses to an ordinary tar stream, so runtimes that do not
// know the format can pull and unpack it as usual.
//
// The package is decoupled from transport: Open takes an *io.SectionReader
// over the blob and never asks where the bytes come from. Since each ReadAt
// of a remote blob is a round trip, Open makes at most two: the blob's last
// DefaultTailReadSize bytes (footer, and the whole TOC of a small layer),
// then the rest of the TOC member in one piece, which it decompresses from
// memory. A caller that has the tail already (read together with the
// blob's size) passes it with WithTail and saves the first. Code that
// fetches compressed ranges itself (the fetcher and the FUSE layer) uses
// Chunk.Decode on the bytes it fetched.
//
// # Verification
//
// Nothing unverified leaves this package. Open checks the sha256 of the
// uncompressed TOC JSON against the digest the image manifest records in the
// layer annotation TOCJSONDigestAnnotation (WithTOCDigest); callers that have
// no such annotation must say so explicitly (WithoutTOCVerification). Every
// chunk is checked against its chunkDigest inside Chunk.Decode before a byte of
// it is returned; there is no API that returns chunk data without that check.
// The TOC is validated as a whole before Open returns: names are relative and
// clean, unique, chunks are contiguous per file and do not overlap or point
// past the TOC, and the uncompressed TOC is capped (WithMaxTOCSize).
//
// # Errors
//
// Errors wrap one of the package's sentinels (ErrFormat, ErrVerify,
// ErrTooLarge, ErrNotFound, ErrNoTOCDigest) with %w and say which entry, offset
// or field was wrong. Hostile input yields an error, never a panic. An
// error reading the blob is not one of them: it is returned as itself,
// wrapped with %w ("estargz: reading TOC: ..."), whatever the decoders
// above the read made of it (ReadTracker), so that a registry timeout
// stays a timeout; only bytes that were read and found malformed are
// ErrFormat.
//
// # Concurrency
//
// A Reader is immutable after Open and safe for concurrent use; Chunk values
// are plain data. Convert compresses gzip members on all CPUs (the members are
// independent) and writes them in order; a single Convert call is not meant to
// be shared between goroutines.
package estargz
