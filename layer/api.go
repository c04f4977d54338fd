package layer

import (
	"context"
	"io"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// The contract of a layer format, in one place: Format, what its Open is
// given (Blob, Build) and returns (Decoder), and the optional capabilities
// a Format or its Decoder may have, each an interface of its own that the
// mounting code type-asserts. A format's package asserts what it
// implements at compile time, as
//
//	var (
//		_ layer.Format      = Format{}
//		_ layer.Tailer      = Format{}
//		_ layer.Decoder     = (*Decoder)(nil)
//		_ layer.BlobChecker = (*Decoder)(nil)
//	)

// Format is one lazily loadable layer format: how a layer's descriptor
// names the digest of its index, and how the index is read from the blob
// and verified against it. Implementations are listed in remote's
// formats, the one list of them.
type Format interface {
	// Name names the format in status and errors ("estargz").
	Name() string
	// IndexDigest returns the digest that the layer's index is verified
	// against, from its descriptor; ok is false when desc is not a layer
	// of this format. A descriptor that claims the format but names no
	// valid digest is an error.
	IndexDigest(desc ocispec.Descriptor) (d digest.Digest, ok bool, err error)
	// Open reads the layer's index from b, verified against d, handing
	// its entries to build, and returns the layer's Decoder. An Open
	// whose blob turns out to be another format's returns an error
	// wrapping ErrOtherFormat. Its other errors wrap its own sentinels,
	// or are the blob's or build's errors, as they are.
	Open(ctx context.Context, b Blob, d digest.Digest, build Build) (Decoder, error)
}

// Build builds the layer's index from the entries decode gives its sink
// (and the Info it returns), and returns what a format may see of it. A
// Format's Open calls it once.
type Build func(decode func(Sink) (Info, error)) (Index, error)

// Ino identifies an inode of a layer's index; 0 is the root.
type Ino uint32

// Index is what a format may read of the index built from its entries
// (index.Index implements it).
type Index interface {
	// Len is the number of inodes.
	Len() int
	// LookupPath resolves a slash-separated path from the root, without
	// following symlinks.
	LookupPath(p string) (Ino, bool)
	// Attr returns ino's attributes.
	Attr(ino Ino) Attr
	// Readlink returns a symlink's target.
	Readlink(ino Ino) (string, bool)
	// Xattrs returns ino's extended attributes (nil if none; not to be
	// modified).
	Xattrs(ino Ino) map[string][]byte
}

// Attr holds an inode's attributes as stat(2) presents them.
type Attr struct {
	Mode   uint32 // type and permission bits
	Size   int64
	Blocks int64 // 512-byte blocks
	UID    uint32
	GID    uint32
	Nlink  uint32
	Mtime  int64 // unix seconds
	Rdev   uint32
	Opaque bool // an overlayfs opaque directory
}

// BlobReader reads compressed byte ranges of a layer blob.
type BlobReader interface {
	ReadRange(ctx context.Context, off, n int64) ([]byte, error)
}

// Invalidator is implemented by caching BlobReaders: bytes that failed
// verification are dropped, so that the next read fetches them anew.
type Invalidator interface {
	Invalidate(off, n int64)
}

// Blob is a layer blob opened for a Format's Open.
type Blob interface {
	BlobReader
	io.ReaderAt
	Size() int64
}

// TailBlob is a Blob whose last bytes were read when it was opened (for
// a Format that is a Tailer): Open takes what it can from them.
type TailBlob interface {
	Blob
	// Tail returns the blob's last bytes (nil if none are held).
	Tail() []byte
}

// ArtifactBlob is a Blob that fetches the other blobs of its layer's
// format from the same repository (SOCI's zTOC).
type ArtifactBlob interface {
	Blob
	// Artifact returns the whole blob d, verified against d.
	Artifact(ctx context.Context, d digest.Digest) ([]byte, error)
}

// Tailer is a Format whose index lies at the blob's end: a blob of such a
// format is opened with its last bytes (the tail hint), and a layer read
// ahead has its tail extended back to where IndexStart says the index
// starts. A Format that is no Tailer keeps its index elsewhere, and its
// blobs are opened without a tail.
type Tailer interface {
	// IndexStart returns where the index starts in a blob of size bytes
	// whose last bytes are tail, if tail ends with this format's footer.
	IndexStart(tail []byte, size int64) (off int64, ok bool)
}

// Decoder turns the compressed bytes of one chunk into its verified
// content. raw is the blob's range [c.Offset, c.End); the chunk's c.Size
// bytes are returned (written into dst's backing array if it has room)
// only if they verify against what the format's index says of them, else
// an error. Safe for concurrent use.
type Decoder interface {
	Decode(dst []byte, c *Chunk, raw []byte) ([]byte, error)
}

// EntryVerifier is a Decoder of a format whose index says more of a file
// than its chunks vouch for: SOCI's zTOC gives each file's mode, owners,
// times, xattrs and link target, which only the layer's own tar headers
// confirm. The layer calls VerifyEntry before it serves an inode beyond
// what stat shows; the inode is served only if it returns nil. blob reads
// the layer's compressed ranges (it is an Invalidator when the layer's
// reader is one).
//
// An error wrapping context.Canceled or DeadlineExceeded, or a fetch
// error, decides nothing (the next call tries again); any other error is
// the index disagreeing with the layer, and the inode is refused.
type EntryVerifier interface {
	VerifyEntry(ctx context.Context, ino Ino, blob BlobReader) error
}

// Truster is an EntryVerifier whose checks a verified layer no longer
// needs: Trust ends them, once the complete blob matched its digest and
// the format's BlobChecker.
type Truster interface {
	Trust()
}

// BlobChecker is a Decoder that checks a complete layer beyond its
// chunks: a SOCI index's file list against the layer's tar, say. Once the
// layer is complete, CheckBlob is called with the whole blob, in blob
// order, while the same bytes are checked against the descriptor's
// digest; it must read blob to its end or return (what it leaves is
// discarded), and end when ctx does. An error marks the layer's index
// bad.
type BlobChecker interface {
	CheckBlob(ctx context.Context, blob io.Reader) error
}

// MemorySized is a Decoder that holds memory of its own besides the index
// (counted against the index memory budget with it).
type MemorySized interface {
	MemoryBytes() int
}
