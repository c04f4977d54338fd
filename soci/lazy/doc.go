// Package lazy is SOCI as a lazily loadable layer format (Format, a
// layer.Format): an unmodified gzip layer whose files and checkpoints are
// listed in a zTOC, a separate blob that the layer's descriptor names
// (AnnotationZtocDigest, put there by the Source that found the image's
// SOCI index).
//
// # Concepts
//
// Open fetches the zTOC from the layer's repository (a
// layer.ArtifactBlob), verified against that digest, and lays its entries
// out as the index: each regular file's chunks are its
// intersections with the spans, a chunk's range its span's, its Span the
// span's number. The SOCI decoder verifies a span's bytes against the span digest
// before inflating them from the span's checkpoint (zran), checks every
// tar header wholly inside the span against the zTOC's entry for it (name,
// type, size: the span digests vouch for the blob's bytes, not for the
// zTOC's reading of them; a mismatch fails the span's reads, EIO with the
// reason in status), and keeps the last few spans inflated, so that the
// many small files of one span cost one inflate; fs stores all of a span's
// files from the request that fetched it for one of them.
//
// A zTOC says more of a file than the span digests vouch for: its mode,
// owners, times, xattrs, link target and device numbers. So the SOCI
// decoder is a layer.EntryVerifier: before fs opens a file or directory,
// returns a link target or xattrs, or a lookup returns a device node, the
// zTOC entries behind the inode (its own, hardlinks to it, a whiteout or
// opaque mark) are checked against the layer's own tar headers for them
// (entry.go). The check is per span: the first inode that needs span
// k has every entry whose header ends in k parsed from k's inflated bytes
// (with the span before, for headers that start there; PAX and GNU
// records included: the bytes between one entry's content and the next's
// must be exactly one entry's headers) and compared with what the index
// serves; the verdict is kept, so that a span is fetched and parsed once
// (fs keeps the raw span for the read that follows the open), and a span
// inflated to be read gets its verdict from the same bytes when its
// headers lie wholly in it. A mismatch fails the operation with EIO, is
// the layer's last error, and marks the index bad (as a failed
// layer.BlobChecker does: new Mounts refused); fs refuses the inode from then
// on, its attributes too. stat and readdir show the zTOC's attributes
// before any check: a forged setuid bit can be seen but the file cannot
// be opened, so neither read nor executed. What one span check cannot see is an entry the zTOC leaves
// out in a span nobody checked (a whiteout, say): the complete layer's
// check finds it. A checkpoint's 32 KiB window is the zTOC's word alone
// (the span digest covers the compressed bytes, not what they inflate to
// from the window), and nothing on the read path can check the bytes
// inflated from it; the decoder keeps the sha256 of every span it
// inflates. Once the layer is complete, the decoder's CheckBlob reads the
// whole tar and compares its entries with the zTOC's and the index's, in
// order (an entry the zTOC omits or invents, or describes otherwise),
// each checkpoint's window with the layer's 32 KiB before it, and each
// span as inflated from its checkpoint (as served, or inflated there from
// the blob's bytes for a span this process did not inflate) with the
// layer's bytes: a mismatch marks that index of the layer bad (remote's
// verifier); a verified layer's entry checks end (Trust).
//
// # Errors
//
// Open's errors wrap soci's sentinels (ErrFormat, ErrInvalid, ErrTooLarge,
// ErrUnsupported, ErrVerify), the budget's, or are the blob's. A zTOC
// that the layer's own bytes contradict is layer.ErrMismatch (with
// soci.ErrVerify on the read path).
//
// # Concurrency
//
// The decoder is safe for concurrent use: its span cache and the entry
// checks' verdicts are guarded by its mutexes, and one span is inflated
// or checked once however many readers need it.
package lazy
