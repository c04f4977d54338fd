// Package zstdchunked reads, verifies and writes zstd:chunked layer blobs,
// the seekable layer format of podman, CRI-O and containers-storage.
//
// # Concepts
//
// A zstd:chunked blob is a zstd-compressed tar layer made of many zstd
// frames: each regular file's content, and each chunk of a large file, is
// a frame of its own, so that it decompresses from its compressed offset
// alone. After the data come zstd skippable frames, which decompressors
// skip: the TOC (a zstd-compressed JSON table of contents, eStargz's TOC
// with a few more fields: endOffset, chunkType, tarSplitDigest), in the
// current layout the tar-split metadata, and last a footer that locates
// the TOC. The blob still decompresses to an ordinary tar stream.
//
// Two layouts exist and both are read. The current one (containers-storage
// since tar-split was added) ends in a 64-byte footer with the magic
// "GNUlInUx" and is annotated with the io.github.containers.zstd-chunked.*
// names; the older one (containers-storage before it, so skopeo 1.9 and
// podman 4.3, and the eStargz library's zstdchunked package) ends in a
// 40-byte footer with the magic "GnUlInUx" and uses the
// io.containers.zstd-chunked.* names. See Footer.
//
// The TOC is decoded and validated by the estargz package's decoder
// (estargz.DecodeTOCJSON): names, entry types, chunk places and sizes get
// the same checks as eStargz's, and the result is an eStargz-shaped entry
// list (estargz.TOCSink) that index builds its index from. A chunk's
// estargz.Chunk has Offset at its frame, End at the next chunk's frame
// (or the TOC's skippable frame), and Digest the sha256 of its
// uncompressed bytes (the file's digest for a file in one chunk).
// Chunks of type "zeros" (holes that containers-storage writes) are
// compressed zeros like any other frame and are read as such.
//
// The package is decoupled from transport: DecodeTOC takes an
// *io.SectionReader and reads only the blob's tail (the footer, and the
// TOC when the tail holds it) and then the rest of the TOC in one read.
//
// # Verification
//
// Nothing unverified leaves the package. The layer's manifest-checksum
// annotation is the sha256 of the compressed TOC; DecodeTOC accepts the
// TOC only if that digest (or, for blobs converted by the eStargz
// library's tools, the sha256 of the uncompressed TOC JSON, eStargz's TOC
// digest) matches. The footer is not trusted: it only says where to read
// bytes that the digest then vouches for. Decoder.Decode returns a chunk's
// bytes only if their sha256 matches the chunk's digest.
//
// # Errors
//
// Errors wrap ErrFormat (not a valid blob or TOC), ErrVerify (bytes that do
// not match the digest that vouches for them) or ErrTooLarge (a cap
// exceeded) with %w, or are the blob reader's errors: a failed read of the
// blob is returned as itself (wrapped with %w), never as ErrFormat, even
// when it cut the TOC short (estargz.ReadTracker).
//
// # Concurrency
//
// A Decoder and a Compression are safe for concurrent use;
// decoders and encoders are pooled.
package zstdchunked
