// Package unpack pulls a whole layer at the link's rate: the blob is
// inflated and applied to a directory while it arrives, and checked
// against its digest once the last byte is in.
//
// # Concepts
//
// Unpack runs three stages joined by pipes: the fetch (a function that
// writes the blob, in order, to a writer: fetcher.Blob.ParallelCopy over
// several range requests, or one stream), which also hashes the
// compressed bytes; the decompressor (gzip, zstd or none, by media type),
// which hashes the uncompressed stream (the diff ID); and the applier,
// containerd's archive.Apply with overlayfs's whiteouts (a whiteout is a
// 0/0 character device, an opaque directory has trusted.overlay.opaque=y,
// as containerd's overlay snapshotter expects), which writes the files
// into the directory. A gzip layer is inflated by zran's indexer
// (soci.Build with a Tee), so the same pass records the SOCI checkpoints
// and the tar entries: Result.Ztoc is the layer's zTOC, built from bytes
// whose digest was checked, for a later lazy mount of the same layer. A
// layer the zTOC cannot describe is still unpacked (Result.IndexErr says
// why there is no zTOC).
//
// The directory receives files before the digest is known to match: the
// caller must not use it unless Unpack returned nil, and must remove it
// otherwise (the snapshotter removes the snapshot).
//
// # Errors
//
// Unpack's errors wrap one of: ErrFetch (the registry did not deliver the
// blob, after the fetcher's retries), ErrCorrupt (the bytes do not
// inflate, or do not form a tar stream), ErrDigest (the blob is not the
// one its digest names, or not of its size), ErrApply (writing the files
// failed: a full disk, say; the cause is wrapped too, so that
// errors.Is(err, syscall.ENOSPC) holds), ErrUnsupported (a media type
// this package does not unpack). The caller's context ending returns its
// error.
//
// # Concurrency
//
// Unpack starts two goroutines for the duration of the call and waits for
// both before it returns. Calls are independent.
package unpack

import "errors"

// Errors of the package.
var (
	ErrFetch       = errors.New("unpack: fetch failed")
	ErrCorrupt     = errors.New("unpack: corrupt layer")
	ErrDigest      = errors.New("unpack: digest mismatch")
	ErrApply       = errors.New("unpack: writing the layer failed")
	ErrUnsupported = errors.New("unpack: unsupported media type")
)
