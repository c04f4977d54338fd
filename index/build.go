package index

import (
	"bytes"
	"encoding/hex"
	"fmt"
	"math"
	"path"
	"sort"
	"syscall"

	"github.com/lazysnap/lazysnap/estargz"
)

// pending is a directory entry before the entries are sorted and laid out.
type pending struct {
	parent   Ino
	d        dirent
	whiteout bool
}

type builder struct {
	x       *Index
	inoOf   map[string]Ino // full name → ino, during the build only
	interns map[string]uint32
	ents    []pending
}

// Build indexes a validated TOC.
func Build(toc *estargz.TOC) (*Index, error) {
	if len(toc.Entries) == 0 || toc.Entries[0].Name != "" || toc.Entries[0].Type != estargz.TypeDir {
		return nil, fmt.Errorf("%w: TOC has no root directory first", ErrInvalid)
	}
	if len(toc.Entries) >= math.MaxUint32 {
		return nil, fmt.Errorf("%w: %d entries", ErrInvalid, len(toc.Entries))
	}
	b := &builder{
		x:       &Index{PrefetchEnd: toc.PrefetchEnd, DataEnd: toc.Offset, nodes: make([]node, 0, len(toc.Entries))},
		inoOf:   make(map[string]Ino, len(toc.Entries)),
		interns: map[string]uint32{},
		ents:    make([]pending, 0, len(toc.Entries)),
	}
	for i := range toc.Entries {
		if err := b.add(&toc.Entries[i]); err != nil {
			return nil, err
		}
	}
	b.layout()
	return b.x, nil
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

func (b *builder) add(e *estargz.Entry) error {
	if e.Name == "" { // the root
		b.inoOf[""] = b.newNode(e)
		return nil
	}
	dir, base := path.Split(e.Name)
	dir = path.Clean(dir)
	if dir == "." {
		dir = ""
	}
	if dir == "" && (base == estargz.PrefetchLandmark || base == estargz.NoPrefetchLandmark) {
		return nil
	}
	parent, ok := b.inoOf[dir]
	if !ok {
		return fmt.Errorf("%w: %q has no parent directory", ErrInvalid, e.Name)
	}
	if base == opaqueMarker {
		b.x.opaque = append(b.x.opaque, parent)
		return nil
	}
	if len(base) > nameMax {
		return fmt.Errorf("%w: name %q is longer than %d bytes", ErrInvalid, base, nameMax)
	}
	var ino Ino
	whiteout := false
	switch {
	case e.Type == estargz.TypeHardlink:
		ino, ok = b.inoOf[e.LinkName]
		if !ok {
			return fmt.Errorf("%w: hardlink %q to unknown %q", ErrInvalid, e.Name, e.LinkName)
		}
		b.x.nodes[ino].nlink++
	case len(base) > len(whiteoutPrefix) && base[:len(whiteoutPrefix)] == whiteoutPrefix:
		base = base[len(whiteoutPrefix):]
		whiteout = true
		ino = Ino(len(b.x.nodes))
		b.x.nodes = append(b.x.nodes, node{mode: syscall.S_IFCHR, nlink: 1, xattr: noXattrs, mtime: e.ModTime.Unix()})
	default:
		ino = b.newNode(e)
	}
	b.inoOf[e.Name] = ino
	b.ents = append(b.ents, pending{parent: parent, whiteout: whiteout,
		d: dirent{ino: ino, nameOff: b.intern(base), nameLen: uint8(len(base))}})
	return nil
}

func (b *builder) newNode(e *estargz.Entry) Ino {
	n := node{mode: uint32(e.Mode & 0o7777), uid: uint32(e.UID), gid: uint32(e.GID), nlink: 1, xattr: noXattrs}
	if !e.ModTime.IsZero() {
		n.mtime = e.ModTime.Unix()
	}
	switch e.Type {
	case estargz.TypeDir:
		n.mode |= syscall.S_IFDIR
	case estargz.TypeReg:
		n.mode |= syscall.S_IFREG
		n.size = e.Size
		n.first, n.count = uint32(len(b.x.chunks)), uint32(len(e.Chunks))
		for _, c := range e.Chunks {
			ch := chunk{offset: c.Offset, fileOff: c.FileOffset, compLen: uint32(c.End - c.Offset), inner: uint32(c.InnerOffset), size: uint32(c.Size)}
			// estargz validated the digest as sha256 and the span as <= 64 MiB
			hex.Decode(ch.digest[:], []byte(c.Digest.Encoded()))
			b.x.chunks = append(b.x.chunks, ch)
		}
	case estargz.TypeSymlink:
		n.mode |= syscall.S_IFLNK
		n.first, n.count = uint32(len(b.x.names)), uint32(len(e.LinkName))
		b.x.names = append(b.x.names, e.LinkName...)
	case estargz.TypeChar:
		n.mode |= syscall.S_IFCHR
		n.rdev = newDev(e.DevMajor, e.DevMinor)
	case estargz.TypeBlock:
		n.mode |= syscall.S_IFBLK
		n.rdev = newDev(e.DevMajor, e.DevMinor)
	case estargz.TypeFifo:
		n.mode |= syscall.S_IFIFO
	}
	if len(e.Xattrs) > 0 {
		n.xattr = int32(len(b.x.xattrs))
		b.x.xattrs = append(b.x.xattrs, e.Xattrs)
	}
	b.x.nodes = append(b.x.nodes, n)
	return Ino(len(b.x.nodes) - 1)
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
	b.ents, b.inoOf, b.interns = nil, nil, nil
}
