package estargz

import "github.com/lazysnap/lazysnap/layer"

// TypeChunk is the TOC's "type" of the second and later chunks of a
// "reg" file; its other types are layer's (layer.TypeReg, ...).
const TypeChunk = "chunk"

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

// Entry is one validated TOC entry (layer.Entry). Chunk entries of the
// format are folded into their file's Chunks; every other entry of the TOC
// is one Entry, in TOC order, plus any parent directory the TOC implies but
// does not list.
type Entry = layer.Entry

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

// LayerInfo is what t tells of its layer besides its entries.
func (t *TOC) LayerInfo() layer.Info {
	return layer.Info{PrefetchEnd: t.PrefetchEnd, DataEnd: t.Offset}
}
