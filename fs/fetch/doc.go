// Package fetch is the chunk fetch scheduler of one lazily loaded layer:
// it makes a file's chunks present on local disk, verified, when a reader
// needs them or before. Serving them is fs's (the FUSE server): a
// fetch.Layer is what an fs.Mount serves, through the narrow fs.Layer
// interface.
//
// # Concepts
//
// A Layer joins an index.Index (the layer's TOC) to a BlobReader (the
// compressed blob, usually the fetcher behind a consumer-defined interface)
// and a content directory on local disk. A file's data is a list of chunks;
// each chunk is fetched as a compressed range, decompressed and verified
// by the layer format's Decoder (a layer.Decoder: fetch knows no format),
// then written at its file offset into a sparse per-file content file
// (ContentPath, File), and marked present. Ensure makes a range of a
// file's chunks present for a reader; FilePresent says a file is whole.
//
// A chunk is claimed before it is fetched: a claim (a call) is owned by
// one span, a run of chunks fetched in one request, and every other
// reader of the chunk waits for that claim.
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
// stream is more than StreamWait bytes from it. A reader (or an entry
// check a request waits for) preempts the background spans in flight that
// no reader waits on and that hold none of its file's chunks (a
// sequential reader's next; NoPreempt: off): their chunks not yet received are released,
// not failed, and fetched again by a later pass of the background once the
// mount is quiet; a chunk under way within StreamWait of its end is
// finished first. Layers that share a Link (Options.Link: remote's FS
// gives its layers one) yield to one another's readers and are preempted
// by them: the background of an image's lower layer does not share the
// link with a reader of its upper one. A cold read of a small file
// brings its small neighbours in blob order in the same request, those of
// its directory and whatever lies between them (ReadAround), more for a
// directory's later misses.
//
// Prediction (Options.NoPredict turns it off): a file a reader needs may
// say what is read next, and that is fetched at once, before the reader
// is woken, instead of one cold miss after another. An ELF file names its
// interpreter and its libraries (DT_NEEDED, found through the layer's
// ld.so.cache, run path and default directories, as the loader finds
// them), each fetched whole up to maxLibrary (the loader maps it; a SOCI
// library of a few spans read a span at a time is a round trip a span);
// an executable's first read, of a chunk fetched or already present (a
// SOCI span another file's read stored), brings the file whole. A compiled
// Python module (.pyc, CPython 3.8-3.12) names the modules its body
// imports (IMPORT_NAME/IMPORT_FROM), found as the path finder would. An
// interpreter named pythonX.Y names the files CPython reads at every start
// (pystart.go: the UTF-8 locale, the time zone, the encodings package,
// sitecustomize). Each predicted file, once it arrives or is read, is
// looked at in turn. PredictStart does the same, before any read, for the
// program a caller says the container runs first (remote: the image's
// entrypoint or command).
// Predicted chunks of several files come in one multi-range request where
// the BlobReader can (MultiRangeReader); at most two predicted fetches are
// in flight, and what is predicted meanwhile comes in one request after.
// Sequential reads of a file are detected (by the server) and the next
// chunks fetched ahead (ReadAhead), in parallel range requests. Complete
// is closed once every chunk is present, whoever fetched it: what a check
// of the whole layer (remote's blob verification) waits for.
//
// Learned profiles: Options.OnChunkAccess reports each chunk once, the
// first time a reader needs it (Ensure, or NoteAccess for a reader that
// does not need a fetch), in first-access order (a recorder of what a
// container start reads); PrefetchChunks fetches a given list of chunks
// (a profile recorded earlier) in as few requests as possible, joining
// ranges that lie close together.
//
// Entry checks: a Decoder may be an EntryVerifier (SOCI's, whose index
// carries file metadata its chunk digests do not cover). VerifyEntry
// checks an inode once, reading through the layer (its requests, and a
// cache of the ranges checks read, held until a fetch of the chunks over
// them uses them or later ones push them out: the file's first read, or
// the read of a span whose start a symlink's check read, then fetches
// only what is not held); a verified inode is remembered
// (EntryVerified), and so is one the layer contradicts (EntryRefused).
// Every blob read of the layer (a reader's, a prediction's multi-range, a
// check's) is known while in flight, and a read of a range one of them
// covers waits for its bytes instead of fetching them again: a check of a
// header in a span a prediction is fetching costs no request. A request
// waiting for a check holds background fetch back as a reader does. When
// to check is the server's. A check runs in a goroutine of the layer's,
// on its lifetime: the request that started it may be interrupted (EINTR)
// and the check goes on, for the restarted request to wait for.
//
// Observability: Options.OnReadLatency reports every read that waited
// for a fetch; Layer.Stats holds the counters (the server adds its reads
// and passthrough opens: NoteFUSERead, NotePassthrough). Options.OnOp is
// carried for the layer's mounts (fs), which report their requests to it.
//
// # Errors
//
// Nothing unverified is ever made present: a chunk that fails
// verification is invalidated in the BlobReader and fetched once more,
// then the read fails. A failure of the BlobReader is a *BlobError (a
// server maps it to EIO, whatever errno it carries); a reader whose own
// context ended while it waited gets an *Interrupted (EINTR); anything
// else (a verification failure, a fetch's own timeout, the layer closed:
// ErrClosed) is a failure. The package does not log; Options.OnError
// receives every fetch error with the layer and range it concerns, for
// the caller to log and count. Error texts start with "fetch:".
//
// A panic while a layer's bytes are decoded (a bug, met on some layer's
// bytes) is contained to that layer: every goroutine of the layer
// (prefetch, background, read-around, read-ahead, prediction, a profile's
// prefetch: every fetch runs fetchSpan, which defers contain) recovers
// there, and a server calls Poison from its own recovery (a FUSE
// request's). The reads waiting for the panicking fetch fail; the layer
// is marked bad (Layer.Bad: a PanicError, wrapping ErrPanic, says what
// panicked and where, with a short stack), which OnError reports once;
// its background work and fetches stop, and every later Ensure fails at
// once. Other layers, and the process, go on. Recovered builds the
// PanicError, for callers that contain panics of their own around a
// layer's decoding.
//
// # Concurrency
//
// A Layer is safe for concurrent use. Fetches are deduplicated per chunk:
// concurrent readers of a cold chunk cause one fetch, which runs detached
// from any one reader, so a reader that is interrupted does not fail the
// others. Every goroutine a Layer starts (Start, read-around, read-ahead,
// prediction, PrefetchChunks) is owned by it and ends by Close, which
// cancels the layer's context, waits for them and closes the content
// files (File fails with ErrClosed after it). A Layer serves one mount.
package fetch
