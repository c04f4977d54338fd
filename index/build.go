package index

import (
	"bytes"
	"encoding/hex"
	"fmt"
	"math"
	"slices"
	"sort"
	"syscall"

	"github.com/lazysnap/lazysnap/layer"
)

// pending is a directory entry before the entries are sorted and laid out.
type pending struct {
	parent   Ino
	d        dirent
	whiteout bool
}

type builder struct {
	x       *Index
	ids     []Ino // estargz entry ID → ino, noIno for entries without one
	interns map[string]uint32
	ents    []pending

	chunksIn int      // chunks given by the decoder so far
	skipped  [][2]int // ranges of those chunks that the index leaves out
	dropped  int      // chunks of skipped ranges before the one ChunkEnd was given
}

// noIno marks a TOC entry that has no inode (landmarks, opaque markers).
const noIno = ^Ino(0)

func newBuilder() *builder {
	return &builder{x: &Index{}, interns: map[string]uint32{}}
}

// Decode builds an index from the entries decode hands the sink it is
// given (a format's decoder of its index), without keeping the entries on
// the way: its peak memory is the index's and a compact name table's.
func Decode(decode func(layer.Sink) (layer.Info, error)) (*Index, error) {
	b := newBuilder()
	info, err := decode(b)
	if err != nil {
		return nil, err
	}
	b.x.PrefetchEnd, b.x.DataEnd = info.PrefetchEnd, info.DataEnd
	b.layout()
	return b.x, nil
}

// Build indexes a complete list of validated entries (layer.Feed).
func Build(entries []layer.Entry, info layer.Info) (*Index, error) {
	return Decode(func(s layer.Sink) (layer.Info, error) { return info, layer.Feed(s, entries) })
}

var (
	_ layer.Sink     = (*builder)(nil)
	_ layer.Reserver = (*builder)(nil)
)

// Reserve implements layer.Reserver: the arrays that grow with the
// entries are sized once rather than by append, whose growth holds the old
// array and the new (2.25 times the array) and leaves up to a quarter of
// the new one unused.
func (b *builder) Reserve(ids, chunks int) {
	b.ids = slices.Grow(b.ids, ids-len(b.ids))
	b.ents = slices.Grow(b.ents, ids-len(b.ents))
	b.x.nodes = slices.Grow(b.x.nodes, ids-len(b.x.nodes))
	b.x.chunks = slices.Grow(b.x.chunks, chunks-len(b.x.chunks))
}

// Entry implements layer.Sink.
func (b *builder) Entry(id, parent, link int, base string, e *layer.Entry) error {
	if id < len(b.ids) { // an implicit directory, listed
		if ino := b.ids[id]; ino != noIno && b.x.nodes[ino].mode&syscall.S_IFMT == syscall.S_IFDIR {
			n := b.node(e)
			n.first, n.count = b.x.nodes[ino].first, b.x.nodes[ino].count
			b.x.nodes[ino] = n
		}
		return nil
	}
	if id != len(b.ids) || id >= math.MaxUint32 {
		return fmt.Errorf("%w: entry %d out of order", ErrInvalid, id)
	}
	first := b.chunksIn
	b.chunksIn += len(e.Chunks)
	ino, err := b.add(parent, link, base, e)
	if err != nil {
		return err
	}
	b.ids = append(b.ids, ino)
	if len(e.Chunks) > 0 && (ino == noIno || b.x.nodes[ino].mode&syscall.S_IFMT != syscall.S_IFREG || int(b.x.nodes[ino].first)+len(e.Chunks) != len(b.x.chunks)) {
		b.skipped = append(b.skipped, [2]int{first, b.chunksIn})
	}
	return nil
}

// ChunkEnd implements layer.Sink.
func (b *builder) ChunkEnd(i int, end int64) {
	for len(b.skipped) > 0 && i >= b.skipped[0][1] {
		b.dropped += b.skipped[0][1] - b.skipped[0][0]
		b.skipped = b.skipped[1:]
	}
	if len(b.skipped) > 0 && i >= b.skipped[0][0] {
		return
	}
	c := &b.x.chunks[i-b.dropped]
	c.compLen = uint32(end - c.offset)
}

func (b *builder) intern(s string) uint32 {
	if off, ok := b.interns[s]; ok {
		return off
	}
	off := uint32(len(b.x.names))
	b.x.names = append(b.x.names, s...)
	b.interns[s] = off
	return off
}

// add adds e, given in directory parent (-1 for the root), and returns its
// inode, noIno if it has none.
func (b *builder) add(parent, link int, base string, e *layer.Entry) (Ino, error) {
	if parent < 0 { // the root
		return b.newNode(e), nil
	}
	if parent == 0 && (base == prefetchLandmark || base == noPrefetchLandmark) {
		return noIno, nil
	}
	if parent >= len(b.ids) || b.ids[parent] == noIno {
		return noIno, fmt.Errorf("%w: %q has no parent directory", ErrInvalid, e.Name)
	}
	pino := b.ids[parent]
	if base == opaqueMarker {
		b.x.opaque = append(b.x.opaque, pino)
		return noIno, nil
	}
	if len(base) > nameMax {
		return noIno, fmt.Errorf("%w: name %q is longer than %d bytes", ErrInvalid, base, nameMax)
	}
	var ino Ino
	whiteout := false
	switch {
	case e.Type == layer.TypeHardlink:
		if link < 0 || link >= len(b.ids) || b.ids[link] == noIno {
			return noIno, fmt.Errorf("%w: hardlink %q to unknown %q", ErrInvalid, e.Name, e.LinkName)
		}
		ino = b.ids[link]
		b.x.nodes[ino].nlink++
	case len(base) > len(whiteoutPrefix) && base[:len(whiteoutPrefix)] == whiteoutPrefix:
		base = base[len(whiteoutPrefix):]
		whiteout = true
		ino = Ino(len(b.x.nodes))
		b.x.nodes = append(b.x.nodes, node{mode: syscall.S_IFCHR, nlink: 1, xattr: noXattrs, mtime: e.ModTime.Unix()})
	default:
		ino = b.newNode(e)
	}
	b.ents = append(b.ents, pending{parent: pino, whiteout: whiteout,
		d: dirent{ino: ino, nameOff: b.intern(base), nameLen: uint8(len(base))}})
	return ino, nil
}

func (b *builder) newNode(e *layer.Entry) Ino {
	b.x.nodes = append(b.x.nodes, b.node(e))
	return Ino(len(b.x.nodes) - 1)
}

// node returns e's inode, adding its chunks, symlink target and xattrs to
// the index.
func (b *builder) node(e *layer.Entry) node {
	n := node{mode: uint32(e.Mode & 0o7777), uid: uint32(e.UID), gid: uint32(e.GID), nlink: 1, xattr: noXattrs}
	if !e.ModTime.IsZero() {
		n.mtime = e.ModTime.Unix()
	}
	switch e.Type {
	case layer.TypeDir:
		n.mode |= syscall.S_IFDIR
	case layer.TypeReg:
		n.mode |= syscall.S_IFREG
		n.size = e.Size
		n.first, n.count = uint32(len(b.x.chunks)), uint32(len(e.Chunks))
		for _, c := range e.Chunks {
			ch := chunk{offset: c.Offset, fileOff: c.FileOffset, inner: uint32(c.InnerOffset), size: uint32(c.Size), span: uint32(c.Span)}
			if c.End != 0 { // else ChunkEnd gives it
				ch.compLen = uint32(c.End - c.Offset)
			}
			// the format validated the digest as sha256 (or gave none)
			// and the range as <= 64 MiB
			if c.Digest != "" {
				hex.Decode(ch.digest[:], []byte(c.Digest.Encoded()))
			}
			b.x.chunks = append(b.x.chunks, ch)
		}
	case layer.TypeSymlink:
		n.mode |= syscall.S_IFLNK
		n.first, n.count = uint32(len(b.x.names)), uint32(len(e.LinkName))
		b.x.names = append(b.x.names, e.LinkName...)
	case layer.TypeChar:
		n.mode |= syscall.S_IFCHR
		n.rdev = newDev(e.DevMajor, e.DevMinor)
	case layer.TypeBlock:
		n.mode |= syscall.S_IFBLK
		n.rdev = newDev(e.DevMajor, e.DevMinor)
	case layer.TypeFifo:
		n.mode |= syscall.S_IFIFO
	}
	if len(e.Xattrs) > 0 {
		n.xattr = int32(len(b.x.xattrs))
		b.x.xattrs = append(b.x.xattrs, e.Xattrs)
	}
	return n
}

// layout sorts the entries by directory and name, drops whiteouts that a
// real entry of the same name overrides, and points each directory at its
// run of entries.
func (b *builder) layout() {
	names := b.x.names
	name := func(p *pending) []byte { return names[p.d.nameOff : p.d.nameOff+uint32(p.d.nameLen)] }
	sort.SliceStable(b.ents, func(i, j int) bool {
		if b.ents[i].parent != b.ents[j].parent {
			return b.ents[i].parent < b.ents[j].parent
		}
		return bytes.Compare(name(&b.ents[i]), name(&b.ents[j])) < 0
	})
	b.x.dirents = make([]dirent, 0, len(b.ents))
	for i := 0; i < len(b.ents); i++ {
		p := &b.ents[i]
		if i+1 < len(b.ents) && b.ents[i+1].parent == p.parent && bytes.Equal(name(&b.ents[i+1]), name(p)) {
			// same name twice in a directory: only a whiteout and the real
			// entry it stands beside can do that (estargz rejects other
			// duplicates); the real entry wins
			if p.whiteout {
				continue
			}
			b.ents[i+1] = *p
			continue
		}
		dir := &b.x.nodes[p.parent]
		if dir.count == 0 {
			dir.first = uint32(len(b.x.dirents))
		}
		dir.count++
		b.x.dirents = append(b.x.dirents, p.d)
		if b.x.nodes[p.d.ino].mode&syscall.S_IFMT == syscall.S_IFDIR {
			dir.nlink++
		}
	}
	for i := range b.x.nodes {
		if n := &b.x.nodes[i]; n.mode&syscall.S_IFMT == syscall.S_IFDIR {
			n.nlink++ // "." and the entry in its parent make 2, each subdirectory's ".." one more
		}
	}
	sort.Slice(b.x.opaque, func(i, j int) bool { return b.x.opaque[i] < b.x.opaque[j] })
	b.ents, b.ids, b.interns = nil, nil, nil
}
