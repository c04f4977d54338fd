// Package soci reads and writes SOCI indexes of unmodified gzip layers, the
// format of awslabs/soci-snapshotter (v0.16.1), in pure Go.
//
// # Concepts
//
// A layer's zTOC (Ztoc) is a FlatBuffers table (schema in internal/fb,
// field order as SOCI's ztoc.fbs) holding the layer's tar entries (File:
// name, type, where the content lies in the uncompressed tar stream, mode,
// owners, times, devices, PAX records) and how to read the blob in pieces:
// the blob is cut into spans at deflate block boundaries, about SpanSize
// uncompressed bytes apart (4 MiB by default); each span has a sha256
// digest of its compressed bytes (SpanRange: from the byte holding its first
// bits to the next span's first full byte, so neighbours may share a byte)
// and a Checkpoint (compressed offset, bits taken from the byte before,
// uncompressed offset, the 32 KiB inflate window) from which zran resumes
// inflating it alone. The checkpoints are stored as SOCI's checkpoint blob
// ("zinfo": a count, the span size, then each checkpoint packed, little
// endian; version 1 blobs leave the first checkpoint out).
//
// A SOCI index (IndexManifest) is an OCI image manifest whose config media
// type names the index version and whose layers are the zTOCs, each
// annotated with the digest and media type of the image layer it indexes.
// A v2 index is found from the image: `soci convert` annotates the image
// manifest with the index's digest (AnnotationIndexDigest) and lists both
// in an image index. A v1 index refers to the image manifest as its
// subject and is found through the referrers API.
//
// Build reads a gzip tar once and returns its zTOC: zran's inflater records
// the checkpoints (at the same block boundaries as SOCI's zlib-based
// builder: the zTOCs of a blob are equal but for the build tool), the span
// digests are taken from the compressed bytes as they pass, and the tar
// entries from the uncompressed stream.
//
// # Error model
//
// Everything here parses registry data: Unmarshal, ParseCheckpoints and
// ParseIndexManifest never panic and check sizes before allocating; a zTOC
// is validated strictly (Validate: known version and algorithm, one
// checkpoint per span digest, checkpoints in order within the blob, spans
// at most MaxSpanBytes, entries of known types with clean names whose
// contents lie in the tar stream in tar order, a tar header apart).
// Unmarshal reads a zTOC in two passes: the first checks that no record
// the entries refer to (table, string, PAX record, span digest) is
// referred to twice or overlaps another (ErrAliased, a FlatBuffers way to
// make a small zTOC decode into gigabytes) and adds up what the copies
// will take, which Limits.Reserve may refuse; the second copies. What it
// allocates is at most DecodeBound of the buffer's size. Errors wrap
// ErrFormat (ErrAliased among them), ErrInvalid, ErrTooLarge,
// ErrUnsupported or ErrNotFound. What a span's
// bytes are is verified where they are used (remote's SOCI decoder checks
// each span against its digest before inflating it; ErrVerify).
//
// A packed zTOC (pack.go) is a zTOC compressed with zstd, stored as a
// blob beside it and named by annotations on its descriptor
// (AnnotationPackedDigest, AnnotationPackedSize): PackZtoc writes one,
// UnpackZtoc reads one back into at most the zTOC's size and only if it
// is the zTOC the digest names (ErrTooLarge, ErrVerify, ErrFormat).
//
// # Concurrency
//
// A Ztoc is immutable once built or parsed and safe for concurrent reads;
// Unmarshal's windows alias the buffer given, which must not change.
package soci
