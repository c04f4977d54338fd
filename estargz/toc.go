package estargz

import (
	"archive/tar"
	"time"
)

// Entry types as they appear in the TOC's "type" field.
const (
	TypeDir      = "dir"
	TypeReg      = "reg"
	TypeSymlink  = "symlink"
	TypeHardlink = "hardlink"
	TypeChar     = "char"
	TypeBlock    = "block"
	TypeFifo     = "fifo"
	TypeChunk    = "chunk" // second and later chunks of a "reg" file
)

// jsonTOC is the TOC exactly as serialized in stargz.index.json.
type jsonTOC struct {
	Version int          `json:"version"`
	Entries []*jsonEntry `json:"entries"`
}

// jsonEntry is one TOC entry exactly as serialized. Field names and
// omitempty rules are the format's; see Entry for the validated form.
type jsonEntry struct {
	Name        string            `json:"name"`
	Type        string            `json:"type"`
	Size        int64             `json:"size,omitempty"`
	ModTime3339 string            `json:"modtime,omitempty"`
	LinkName    string            `json:"linkName,omitempty"`
	Mode        int64             `json:"mode,omitempty"`
	UID         int               `json:"uid,omitempty"`
	GID         int               `json:"gid,omitempty"`
	Uname       string            `json:"userName,omitempty"`
	Gname       string            `json:"groupName,omitempty"`
	Offset      int64             `json:"offset,omitempty"`
	InnerOffset int64             `json:"innerOffset,omitempty"`
	DevMajor    int               `json:"devMajor,omitempty"`
	DevMinor    int               `json:"devMinor,omitempty"`
	Xattrs      map[string][]byte `json:"xattrs,omitempty"`
	Digest      string            `json:"digest,omitempty"`
	ChunkOffset int64             `json:"chunkOffset,omitempty"`
	ChunkSize   int64             `json:"chunkSize,omitempty"`
	ChunkDigest string            `json:"chunkDigest,omitempty"`
	EndOffset   int64             `json:"endOffset,omitempty"` // zstd:chunked (WithEndOffsets); unused here
}

// Entry is one validated TOC entry. Chunk entries of the format are folded
// into their file's Chunks; every other entry of the TOC is one Entry, in TOC
// order, plus any parent directory the TOC implies but does not list.
type Entry struct {
	// Name is the clean, relative path ("usr/bin/env"); "" is the root.
	Name string
	// Type is one of the Type* constants other than TypeChunk.
	Type string
	// Size is the file size of a "reg" entry.
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
	// Digest is the sha256 of the whole file content of a "reg" entry, if
	// the TOC records it.
	Digest string
	// Chunks cover a non-empty "reg" file, contiguous and in file order.
	Chunks []Chunk
	// Implicit marks a directory the TOC does not list but whose children it
	// does.
	Implicit bool
}

// TarHeader returns e's metadata as a tar header (no content).
func (e *Entry) TarHeader() *tar.Header {
	h := &tar.Header{
		Name:     e.Name,
		Mode:     e.Mode,
		Uid:      e.UID,
		Gid:      e.GID,
		Uname:    e.Uname,
		Gname:    e.Gname,
		ModTime:  e.ModTime,
		Linkname: e.LinkName,
		Devmajor: int64(e.DevMajor),
		Devminor: int64(e.DevMinor),
		Format:   tar.FormatPAX,
	}
	switch e.Type {
	case TypeDir:
		h.Typeflag = tar.TypeDir
	case TypeReg:
		h.Typeflag = tar.TypeReg
		h.Size = e.Size
	case TypeSymlink:
		h.Typeflag = tar.TypeSymlink
	case TypeHardlink:
		h.Typeflag = tar.TypeLink
	case TypeChar:
		h.Typeflag = tar.TypeChar
	case TypeBlock:
		h.Typeflag = tar.TypeBlock
	case TypeFifo:
		h.Typeflag = tar.TypeFifo
	}
	if len(e.Xattrs) > 0 {
		h.PAXRecords = make(map[string]string, len(e.Xattrs))
		for k, v := range e.Xattrs {
			h.PAXRecords["SCHILY.xattr."+k] = string(v)
		}
	}
	return h
}

// TOC is a validated table of contents.
type TOC struct {
	// Version is the TOC's version field (1).
	Version int
	// Entries are in TOC order, which is blob order for data.
	Entries []Entry
	// Offset is the compressed offset of the TOC member in the blob; every
	// chunk lies before it.
	Offset int64
	// PrefetchEnd is the compressed offset up to which the blob holds the
	// prioritized files (the offset of the PrefetchLandmark's member), or 0
	// when the blob has no prefetch landmark or NoPrefetchLandmark.
	PrefetchEnd int64
}
