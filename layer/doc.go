// Package layer is the boundary between lazysnap's layer formats and the
// code that mounts them: the format-neutral types a format's index is
// given in (Chunk, Entry, the Sink that builds an index from them) and,
// in api.go, the Format interface every lazily loadable format
// implements, with its optional capabilities; in write.go, the Writer
// of a format lazysnap writes (convert's list of them).
//
// Concepts. A layer blob holds the files of a tar layer, compressed. A
// format's index (eStargz's TOC, zstd:chunked's TOC, SOCI's zTOC) lists
// the files, and cuts each regular file's content into Chunks: a
// compressed range of the blob to fetch, and where in its decoded bytes
// the chunk lies. The format's Decoder turns a chunk's compressed range
// into its content and verifies it against what the index vouches for.
// Entries reach the in-memory index (package index) through a Sink, as a
// format decodes them, so that a format's index is never held whole.
//
// Nothing here knows a format: this package imports no lazysnap package,
// and the packages that mount layers (fs, index, remote) import no format
// package, only this one. A new format is one package implementing
// Format, and one line in remote's list of formats (and, if lazysnap
// writes it, its Writer and one line in convert's writers).
//
// Errors. ErrInvalid: a list of entries that cannot be presented as a
// filesystem (Feed). A format wraps its own sentinels; remote maps them to
// fallback reasons in one place.
//
// Concurrency. The types are plain values. A Decoder, and every optional
// capability a Decoder implements, is safe for concurrent use; a Sink is
// used by one goroutine.
package layer
