// Package fs is the FUSE filesystem of one lazily loaded layer, read-only,
// whose file contents are fetched on first read.
//
// # Concepts
//
// A Layer joins an index.Index (the layer's TOC) to a BlobReader (the
// compressed blob, usually the fetcher behind a consumer-defined interface)
// and a content directory on local disk. A file's data is a list of chunks;
// each chunk is fetched as a compressed range, decompressed and verified
// by the layer format's Decoder (a layer.Decoder: fs knows no format), then written at its file offset into a sparse
// per-file content file, and marked present. Reads are served from the
// content files (read into the reply: one copy more than a splice); once every chunk of a file is
// present, new opens are handed to the kernel through FUSE passthrough where
// it supports that, so cached reads run at local-disk speed.
//
// A mount allows idmapped clones (FUSE_ALLOW_IDMAP, Linux 6.12; the kernel
// checks permissions): a user-namespaced container sees the layer's owners
// shifted by its ID map, each container through its own clone of the one
// mount, the content fetched and stored once (Mount.IDMappable).
//
// Prefetch fetches the prioritized range of the blob (up to the prefetch
// landmark) first, in as few requests as SpanSize allows; when the
// BlobReader is a RangeStreamer, each chunk of a span is verified, stored
// and made available as soon as its bytes have arrived, so that the first
// files (prioritized files are in first-access order) can be read while
// the rest is still coming; background fetch then fetches every remaining chunk in
// blob order in spans of BackgroundSpanSize, within BackgroundInflight bytes
// in flight, issuing a span only when no reader is waiting and none has
// waited for BackgroundQuiet. A reader whose chunk a background span holds
// is served when the chunk's bytes arrive, or fetches it itself when the
// stream is more than StreamWait bytes from it. A cold read of a small file
// brings its small neighbours in blob order in the same request, those of
// its directory and whatever lies between them (ReadAround), more for a
// directory's later misses.
//
// Prediction (Options.NoPredict turns it off): a file a reader needs may
// say what is read next, and that is fetched at once, before the reader
// is woken, instead of one cold miss after another. An ELF file names its
// interpreter and its libraries (DT_NEEDED, found through the layer's
// ld.so.cache, run path and default directories, as the loader finds
// them); an executable's first chunk brings the file whole. A compiled
// Python module (.pyc, CPython 3.8-3.12) names the modules its body
// imports (IMPORT_NAME/IMPORT_FROM), found as the path finder would. Each
// predicted file, once it arrives or is read, is looked at in turn.
// Predicted chunks of several files come in one multi-range request where
// the BlobReader can (MultiRangeReader); at most two predicted fetches are
// in flight, and what is predicted meanwhile comes in one request after. Sequential reads of a file are detected and the next chunks
// fetched ahead, in parallel range requests. Complete is closed once every
// chunk is present, whoever fetched it: what a check of the whole layer
// (remote's blob verification) waits for.
//
// Learned profiles: Options.OnChunkAccess reports each chunk once, the
// first time a reader needs it, in first-access order (a recorder of what
// a container start reads); PrefetchChunks fetches a given list of chunks
// (a profile recorded earlier) in as few requests as possible, joining
// ranges that lie close together.
//
// Observability: Options.OnOp reports every FUSE request a mount
// answers (its OpName, time, errno), Options.OnReadLatency every read that
// waited for a fetch; Layer.Stats holds the counters.
//
// Serving: a Mount serves the FUSE protocol with go-fuse's ProtocolServer
// over a /dev/fuse descriptor of its own (server.go says why not
// fuse.Server), at the raw level, statelessly: a NodeID is the index's Ino
// + 1, a directory offset an entry's position, a file handle a slot of the
// mount's open table. So another process can serve a live mount (Adopt):
// given a duplicate of the descriptor, the saved INIT exchange and the open
// table's file (MountShared keeps it in a shared mapping, which survives a
// SIGKILL), it resolves every NodeID and handle the kernel holds, and asks
// the kernel to resend what its predecessor read and never answered
// (FUSE_NOTIFY_RESEND, Linux 6.9; resent requests carry the high bit of
// their unique ID, and answering one twice is harmless read-only).
//
// A Decoder may be an EntryVerifier (SOCI's, whose index carries file
// metadata its chunk digests do not cover): then an inode is verified
// before it is opened, its link read, its xattrs listed or read, and, for
// a device node, before a lookup returns it (READDIRPLUS leaves an
// unverified device's attributes out, so that the kernel looks it up);
// a verified inode is remembered, and so is one the layer contradicts:
// it is refused from then on, its attributes too (GETATTR is EIO, and the
// kernel is told to drop what it caches of it, FUSE_NOTIFY_INVAL_INODE).
//
// # Errors
//
// Nothing unverified is ever served: a chunk that fails verification is
// invalidated in the BlobReader and fetched once more, then the read fails
// with EIO. Errors reach the kernel through one mapper (Errno): a cancelled
// read is EINTR, a missing name ENOENT, anything else EIO (a failed fetch
// too, whatever socket errno it carries). The package does
// not log; Options.OnError receives every fetch error with the layer and
// range it concerns, for the caller to log and count.
//
// A panic while a layer's bytes are decoded or served (a bug, met on some
// layer's bytes) is contained to that layer, in one place per kind of
// entry point: the layer's goroutines (every fetch runs fetchSpan, which
// defers contain) and its FUSE requests (go-fuse recovers a handler's
// panic and calls the mount's PanicHandler). The request, or the reads
// waiting for the panicking fetch, fail with EIO; the layer is marked bad
// (Layer.Bad: a PanicError, wrapping ErrPanic, says what panicked and
// where, with a short stack), which OnError reports once; its background
// work and fetches stop, and every later read or open of its files fails
// with EIO at once (metadata still serves: it is the index's). Other
// layers, and the process, go on. Recovered builds the PanicError, for
// callers that contain panics of their own around a layer's decoding.
//
// # Concurrency
//
// Fetches are deduplicated per chunk: concurrent readers of a cold chunk
// cause one fetch, which runs detached from any one reader, so a reader that
// is interrupted (EINTR) does not fail the others. A Layer is safe for
// concurrent use and serves one mount.
package fs
