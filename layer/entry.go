package layer

import (
	"fmt"
	"math"
	"path"
	"time"
)

// Entry types.
const (
	TypeDir      = "dir"
	TypeReg      = "reg"
	TypeSymlink  = "symlink"
	TypeHardlink = "hardlink"
	TypeChar     = "char"
	TypeBlock    = "block"
	TypeFifo     = "fifo"
)

// Entry is one validated entry of a layer's index: a file, directory,
// link or device node, with its metadata, and a regular file's chunks.
type Entry struct {
	// Name is the clean, relative path ("usr/bin/env"); "" is the root.
	Name string
	// Type is one of the Type* constants.
	Type string
	// Size is the file size of a TypeReg entry.
	Size int64
	// ModTime is the modification time, zero if unknown.
	ModTime time.Time
	// LinkName is the target of a symlink, or the clean name of the
	// entry a hardlink refers to.
	LinkName string
	// Mode holds the permission bits and setuid, setgid and sticky bits
	// (07777); the file type is in Type.
	Mode     int64
	UID, GID int
	Uname    string
	Gname    string
	DevMajor int
	DevMinor int
	Xattrs   map[string][]byte
	// Digest is the sha256 of the whole file content of a TypeReg entry,
	// if the index records it.
	Digest string
	// Chunks cover a non-empty TypeReg file, contiguous and in file order.
	Chunks []Chunk
	// Implicit marks a directory the index does not list but whose
	// children it does.
	Implicit bool
}

// Sink receives a layer's validated entries as a format decodes them: the
// index builds itself from what it is given.
type Sink interface {
	// Entry is called for every entry, in ID order. IDs count from 0 (the
	// root, given first) up, one per entry (implicit directories have
	// IDs). A directory given as implicit that the index lists later is
	// given again, with its ID and Implicit false. parent is the ID of the
	// entry's directory (-1 for the root), link the ID of a hardlink's
	// target (-1 for other entries) and base the last element of e.Name.
	// e.Chunks may have End 0: ChunkEnd then gives it once the whole
	// index has been read. The sink must not keep e or e.Chunks (it may
	// keep strings and Xattrs). An error stops the decoding and is
	// returned.
	Entry(id, parent, link int, base string, e *Entry) error
	// ChunkEnd gives the End of the i-th chunk given, counting the chunks
	// of every entry in the order Entry gave them, after the last entry,
	// for every chunk that was given with End 0.
	ChunkEnd(i int, end int64)
}

// Reserver may be implemented by a Sink that would rather size its arrays
// once than grow them: a format calls Reserve at most once, early, with
// estimates of how many IDs and chunks it will give. They are estimates:
// it may give more or fewer.
type Reserver interface {
	Reserve(ids, chunks int)
}

// Info is what a format tells of a layer besides its entries.
type Info struct {
	// PrefetchEnd is the compressed offset up to which the blob holds the
	// prioritized files, 0 if none.
	PrefetchEnd int64
	// DataEnd is the compressed offset where file data ends (eStargz:
	// where the TOC starts).
	DataEnd int64
}

// Feed gives a complete list of entries to sink, in order: the root first,
// every entry after its directory, a hardlink after its target. It is
// the Sink side of a format that decodes its whole index at once.
func Feed(sink Sink, entries []Entry) error {
	if len(entries) == 0 || entries[0].Name != "" || entries[0].Type != TypeDir {
		return fmt.Errorf("%w: no root directory first", ErrInvalid)
	}
	if len(entries) >= math.MaxUint32 {
		return fmt.Errorf("%w: %d entries", ErrInvalid, len(entries))
	}
	if r, ok := sink.(Reserver); ok {
		chunks := 0
		for i := range entries {
			chunks += len(entries[i].Chunks)
		}
		r.Reserve(len(entries), chunks)
	}
	byName := make(map[string]int, len(entries))
	for i := range entries {
		e := &entries[i]
		byName[e.Name] = i
		parent, link := -1, -1
		dir, base := path.Split(e.Name)
		if e.Name != "" {
			dir = path.Clean(dir)
			if dir == "." {
				dir = ""
			}
			p, ok := byName[dir]
			if !ok {
				return fmt.Errorf("%w: %q has no parent directory", ErrInvalid, e.Name)
			}
			parent = p
		}
		if e.Type == TypeHardlink {
			l, ok := byName[e.LinkName]
			if !ok {
				return fmt.Errorf("%w: hardlink %q to unknown %q", ErrInvalid, e.Name, e.LinkName)
			}
			link = l
		}
		if err := sink.Entry(i, parent, link, base, e); err != nil {
			return err
		}
	}
	return nil
}
