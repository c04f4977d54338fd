// Package index holds a compact, immutable in-memory index of one layer,
// built from the format-neutral entries a layer format gives it
// (layer.Sink, layer.Entry): inodes with their attributes, sorted directory entries, the
// chunk table and interned names, laid out in a few flat slices so that a
// 100k-entry layer costs a few MiB of heap and no per-entry pointers.
//
// # Concepts
//
// An Ino numbers an inode densely from 0 (the root). Hardlinked names share
// one Ino, whose Nlink counts them. Directory entries are sorted by name, so
// Lookup is a binary search: O(log n) in the directory's size.
//
// The index presents the layer the way overlayfs expects a lower layer:
// an OCI whiteout ".wh.NAME" becomes a character device 0/0 named NAME, an
// opaque marker ".wh..wh..opq" marks its directory opaque (Attr.Opaque; the
// fs package turns that into the overlay xattrs), and eStargz's prefetch
// landmark files at the root are hidden.
//
// # Errors
//
// Build and Decode return errors wrapping ErrInvalid (layer.ErrInvalid)
// for entries the index cannot present (a name longer than NAME_MAX, more
// entries than fit an Ino). The entries themselves have been validated by
// their format. The index imports no format package.
//
// # Concurrency
//
// An Index is immutable once built and safe for concurrent use.
package index
