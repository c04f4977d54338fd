package index

import (
	"fmt"
	"path"
	"sort"
	"strings"
	"syscall"
	"unsafe"

	"github.com/lazysnap/lazysnap/layer"
	"github.com/opencontainers/go-digest"
)

// ErrInvalid means the entries cannot be presented as a filesystem
// (layer.ErrInvalid).
var ErrInvalid = layer.ErrInvalid

// Ino identifies an inode of the layer; 0 is the root.
type Ino = layer.Ino

// Root is the root directory's Ino.
const Root Ino = 0

const (
	nameMax  = 255 // NAME_MAX: longer names cannot be presented
	noXattrs = -1

	whiteoutPrefix = ".wh."
	opaqueMarker   = ".wh..wh..opq"

	// eStargz's landmarks, which are no files (estargz.PrefetchLandmark,
	// NoPrefetchLandmark)
	prefetchLandmark   = ".prefetch.landmark"
	noPrefetchLandmark = ".no.prefetch.landmark"
)

// node is one inode. 48 bytes: the fields are ordered to avoid padding.
type node struct {
	size  int64  // regular files
	mtime int64  // unix seconds (the TOC has no finer time)
	mode  uint32 // type bits | permission bits, as in stat(2)
	uid   uint32
	gid   uint32
	nlink uint32
	first uint32 // dir: first dirent; reg: first chunk; symlink: target offset in names
	count uint32 // dir: dirents; reg: chunks; symlink: target length
	rdev  uint32 // Linux new_encode_dev(major, minor)
	xattr int32  // index into Index.xattrs, or noXattrs
}

// dirent is one name in a directory: 12 bytes.
type dirent struct {
	ino     Ino
	nameOff uint32
	nameLen uint8
}

// chunk is one chunk of a regular file: 64 bytes.
type chunk struct {
	offset  int64 // compressed offset of the range it is decoded from
	fileOff int64
	compLen uint32 // End - offset
	inner   uint32
	size    uint32
	span    uint32   // layer.Chunk.Span
	digest  [32]byte // all zero: none
}

// Index is the compact index of one layer.
type Index struct {
	nodes   []node
	dirents []dirent
	chunks  []chunk
	names   []byte
	xattrs  []map[string][]byte
	opaque  []Ino // sorted
	// PrefetchEnd is the compressed offset up to which the layer holds its
	// prioritized files, 0 if none (see estargz.TOC.PrefetchEnd).
	PrefetchEnd int64
	// DataEnd is the compressed offset where file data ends (the TOC's).
	DataEnd int64
}

// Attr holds an inode's attributes as stat(2) presents them.
type Attr = layer.Attr

var _ layer.Index = (*Index)(nil)

// Len is the number of inodes.
func (x *Index) Len() int { return len(x.nodes) }

// Attr returns ino's attributes.
func (x *Index) Attr(ino Ino) Attr {
	n := &x.nodes[ino]
	a := Attr{Mode: n.mode, UID: n.uid, GID: n.gid, Nlink: n.nlink, Mtime: n.mtime, Rdev: n.rdev}
	if n.mode&syscall.S_IFMT == syscall.S_IFREG {
		a.Size, a.Blocks = n.size, (n.size+511)/512
	}
	if n.mode&syscall.S_IFMT == syscall.S_IFLNK {
		a.Size = int64(n.count)
	}
	if n.mode&syscall.S_IFMT == syscall.S_IFDIR {
		i := sort.Search(len(x.opaque), func(i int) bool { return x.opaque[i] >= ino })
		a.Opaque = i < len(x.opaque) && x.opaque[i] == ino
	}
	return a
}

// IsDir reports whether ino is a directory.
func (x *Index) IsDir(ino Ino) bool { return x.nodes[ino].mode&syscall.S_IFMT == syscall.S_IFDIR }

func (x *Index) name(d *dirent) string {
	return string(x.names[d.nameOff : d.nameOff+uint32(d.nameLen)])
}

// entries returns dir's entries, sorted by name (none for a non-directory).
func (x *Index) entries(dir Ino) []dirent {
	n := &x.nodes[dir]
	if n.mode&syscall.S_IFMT != syscall.S_IFDIR {
		return nil
	}
	return x.dirents[n.first : n.first+n.count]
}

// Lookup finds name in directory dir.
func (x *Index) Lookup(dir Ino, name string) (Ino, bool) {
	ents := x.entries(dir)
	i := sort.Search(len(ents), func(i int) bool {
		d := &ents[i]
		return string(x.names[d.nameOff:d.nameOff+uint32(d.nameLen)]) >= name
	})
	if i < len(ents) && x.name(&ents[i]) == name {
		return ents[i].ino, true
	}
	return 0, false
}

// LookupPath resolves a slash-separated path from the root, without
// following symlinks.
func (x *Index) LookupPath(p string) (Ino, bool) {
	ino := Root
	for _, el := range strings.Split(strings.Trim(path.Clean("/"+p), "/"), "/") {
		if el == "" {
			continue
		}
		var ok bool
		if ino, ok = x.Lookup(ino, el); !ok {
			return 0, false
		}
	}
	return ino, true
}

// ReadDir calls fn for each entry of dir in name order until fn returns
// false.
func (x *Index) ReadDir(dir Ino, fn func(name string, ino Ino) bool) {
	ents := x.entries(dir)
	for i := range ents {
		if !fn(x.name(&ents[i]), ents[i].ino) {
			return
		}
	}
}

// NumEntries is the number of entries in dir.
func (x *Index) NumEntries(dir Ino) int { return len(x.entries(dir)) }

// Readlink returns a symlink's target.
func (x *Index) Readlink(ino Ino) (string, bool) {
	n := &x.nodes[ino]
	if n.mode&syscall.S_IFMT != syscall.S_IFLNK {
		return "", false
	}
	return string(x.names[n.first : n.first+n.count]), true
}

// Xattrs returns ino's extended attributes from the TOC (nil if none). The
// map must not be modified.
func (x *Index) Xattrs(ino Ino) map[string][]byte {
	if i := x.nodes[ino].xattr; i != noXattrs {
		return x.xattrs[i]
	}
	return nil
}

// NumChunks is the number of chunks of a regular file.
func (x *Index) NumChunks(ino Ino) int {
	n := &x.nodes[ino]
	if n.mode&syscall.S_IFMT != syscall.S_IFREG {
		return 0
	}
	return int(n.count)
}

// Chunk returns a regular file's i-th chunk.
func (x *Index) Chunk(ino Ino, i int) layer.Chunk {
	c := &x.chunks[x.nodes[ino].first+uint32(i)]
	lc := layer.Chunk{Offset: c.offset, End: c.offset + int64(c.compLen), InnerOffset: int64(c.inner),
		FileOffset: c.fileOff, Size: int64(c.size), Span: int(c.span)}
	if c.digest != ([32]byte{}) {
		lc.Digest = digest.NewDigestFromBytes(digest.SHA256, c.digest[:])
	}
	return lc
}

// ChunkIndex returns the index of the chunk of ino holding file offset off,
// or -1 if off is outside the file.
func (x *Index) ChunkIndex(ino Ino, off int64) int {
	n := &x.nodes[ino]
	if n.mode&syscall.S_IFMT != syscall.S_IFREG || off < 0 || off >= n.size {
		return -1
	}
	cs := x.chunks[n.first : n.first+n.count]
	return sort.Search(len(cs), func(i int) bool { return cs[i].fileOff+int64(cs[i].size) > off })
}

// Sizes reports the index's heap footprint in bytes, for benchmarks.
func (x *Index) Sizes() int { return x.MemoryBytes() }

// MemoryBytes is the index's heap footprint in bytes: its arrays by
// capacity, and its xattrs (each name and value, and 48 bytes of map
// overhead).
func (x *Index) MemoryBytes() (total int) {
	total = cap(x.nodes)*int(unsafe.Sizeof(node{})) + cap(x.dirents)*int(unsafe.Sizeof(dirent{})) +
		cap(x.chunks)*int(unsafe.Sizeof(chunk{})) + cap(x.names) + cap(x.opaque)*4 + cap(x.xattrs)*8
	for _, m := range x.xattrs {
		for k, v := range m {
			total += len(k) + len(v) + 48
		}
	}
	return total
}

func newDev(major, minor int) uint32 {
	// Linux new_encode_dev: minor's low 8 bits, major's 12 bits, minor's rest
	return uint32(minor&0xff) | uint32(major&0xfff)<<8 | uint32(minor&^0xff)<<12
}

func (x *Index) String() string {
	return fmt.Sprintf("index: %d inodes, %d entries, %d chunks", len(x.nodes), len(x.dirents), len(x.chunks))
}

// ChunkID numbers a regular file's i-th chunk among all chunks of the layer
// (0 <= ChunkID < TotalChunks), for per-chunk state kept outside the index.
func (x *Index) ChunkID(ino Ino, i int) int { return int(x.nodes[ino].first) + i }

// TotalChunks is the number of chunks in the layer.
func (x *Index) TotalChunks() int { return len(x.chunks) }

// IsRegular reports whether ino is a regular file.
func (x *Index) IsRegular(ino Ino) bool { return x.nodes[ino].mode&syscall.S_IFMT == syscall.S_IFREG }
