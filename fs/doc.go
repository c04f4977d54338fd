// Package fs is the FUSE server of one lazily loaded layer, read-only:
// it serves a Layer (the index, and contents made present on demand by
// the chunk fetch scheduler, fs/fetch) at a mountpoint.
//
// # Concepts
//
// Layer is the seam: what the server reads of a layer (its index; Ensure
// before a read; the content file; whether a file is whole; read-ahead;
// entry checks; whether it is bad). fetch.Layer satisfies it; the server
// knows nothing of chunks being claimed, spans or prefetch.
//
// Reads are served from the layer's content files (read into the reply:
// one copy more than a splice); once every chunk of a file is present,
// new opens are handed to the kernel through FUSE passthrough where it
// supports that, so cached reads run at local-disk speed. Sequential
// reads of an open file are detected here and the layer asked to read
// ahead.
//
// A mount allows idmapped clones (FUSE_ALLOW_IDMAP, Linux 6.12; the kernel
// checks permissions): a user-namespaced container sees the layer's owners
// shifted by its ID map, each container through its own clone of the one
// mount, the content fetched and stored once (Mount.IDMappable).
//
// Serving: a Mount (MountLayer, MountShared) serves the FUSE protocol
// with go-fuse's ProtocolServer over a /dev/fuse descriptor of its own
// (server.go says why not fuse.Server), at the raw level, statelessly: a
// NodeID is the index's Ino + 1, a directory offset an entry's position,
// a file handle a slot of the mount's open table. So another process can
// serve a live mount (Adopt): given a duplicate of the descriptor, the
// saved INIT exchange and the open table's file (MountShared keeps it in
// a shared mapping, which survives a SIGKILL), it resolves every NodeID
// and handle the kernel holds, and asks the kernel to resend what its
// predecessor read and never answered (FUSE_NOTIFY_RESEND, Linux 6.9;
// resent requests carry the high bit of their unique ID, and answering
// one twice is harmless read-only).
//
// Entry checks: an inode is verified (Layer.VerifyEntry; a no-op unless
// the format's Decoder is an EntryVerifier, SOCI's) before a file is
// opened, its link read, its xattrs listed or read, and, for a device node,
// before a lookup returns it (READDIRPLUS leaves an unverified device's
// attributes out, so that the kernel looks it up); an inode the layer
// contradicts is refused from then on, its attributes too (GETATTR is
// EIO, and the kernel is told to drop what it caches of it,
// FUSE_NOTIFY_INVAL_INODE). A directory is listed unchecked: a listing
// is the index's names, which no header vouches for (the complete
// layer's check does).
//
// Observability: the layer's OnOp (fetch.Options.OnOp) reports every
// FUSE request a mount answers (its OpName, time, errno).
//
// # Errors
//
// Errors reach the kernel through one mapper (Errno): a reader's
// interruption (fetch.Interrupted) is EINTR, a missing name ENOENT,
// anything else EIO (a failed fetch, fetch.BlobError, too, whatever
// socket errno it carries). Nothing of a bad layer (Layer.Bad) is opened
// or read, not even what is present (EIO); its metadata still serves. A
// request whose handler panics (go-fuse recovers it and calls the
// mount's PanicHandler) fails with EIO and marks the layer bad
// (Layer.Poison). The package does not log. Mount, Adopt and Unmount
// return errors prefixed "fs:"; ErrNotResumable is a Session this process
// cannot serve.
//
// # Concurrency
//
// A Mount reads and handles requests on up to maxReaders goroutines of
// its own (on threads, with poll(2): see server), which Unmount and
// Detach stop and wait for (Detach bounded by detachWait). The open table
// is shared between them and, for a handover, with a successor process;
// a Layer must be safe for concurrent use.
package fs
