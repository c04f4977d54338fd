package estargz

import (
	"fmt"
	"github.com/lazysnap/lazysnap/layer"
	"hash/maphash"
	"slices"
	"strings"
)

// Entry kinds as the name table keeps them: one byte per entry.
const (
	kindDir uint8 = iota + 1
	kindReg
	kindSymlink
	kindHardlink
	kindChar
	kindBlock
	kindFifo

	kindImplicit uint8 = 0x80 // or'ed in: a directory the TOC does not list (yet)
)

func kindOf(typ string) uint8 {
	switch typ {
	case layer.TypeDir:
		return kindDir
	case layer.TypeReg:
		return kindReg
	case layer.TypeSymlink:
		return kindSymlink
	case layer.TypeHardlink:
		return kindHardlink
	case layer.TypeChar:
		return kindChar
	case layer.TypeBlock:
		return kindBlock
	case layer.TypeFifo:
		return kindFifo
	}
	return 0
}

func kindName(k uint8) string {
	return [...]string{"?", layer.TypeDir, layer.TypeReg, layer.TypeSymlink, layer.TypeHardlink, layer.TypeChar, layer.TypeBlock, layer.TypeFifo}[k&^kindImplicit]
}

// nameTable maps the entries of a TOC being decoded by (parent, base name)
// rather than by full name: per entry, 13 bytes plus its base name and 8
// bytes of hash slots, where a map of full names costs a string and a map
// slot per entry (about 100 bytes on a Debian tree's names).
type nameTable struct {
	seed    maphash.Seed
	parent  []uint32 // by ID; the root's is 0
	kind    []uint8
	nameEnd []uint32 // base name of ID i is names[nameEnd[i-1]:nameEnd[i]]
	names   []byte
	slots   []uint32 // open addressing: ID+1, 0 = empty; never more than half full
	links   map[uint32]uint32

	lastDir string // the directory resolved last, and its ID
	lastID  uint32
}

func newNameTable() *nameTable {
	t := &nameTable{seed: maphash.MakeSeed(), slots: make([]uint32, 1024), links: map[uint32]uint32{}}
	t.parent, t.kind, t.nameEnd = append(t.parent, 0), append(t.kind, kindDir|kindImplicit), append(t.nameEnd, 0)
	return t
}

func (t *nameTable) len() int { return len(t.kind) }

func (t *nameTable) base(id uint32) string {
	start := uint32(0)
	if id > 0 {
		start = t.nameEnd[id-1]
	}
	return string(t.names[start:t.nameEnd[id]])
}

func (t *nameTable) baseEqual(id uint32, base string) bool {
	start := uint32(0)
	if id > 0 {
		start = t.nameEnd[id-1]
	}
	return string(t.names[start:t.nameEnd[id]]) == base
}

func (t *nameTable) hash(parent uint32, base string) uint64 {
	return maphash.String(t.seed, base) ^ uint64(parent)*0x9e3779b97f4a7c15
}

// lookup finds base in directory parent.
func (t *nameTable) lookup(parent uint32, base string) (uint32, bool) {
	mask := uint64(len(t.slots) - 1)
	for i := t.hash(parent, base) & mask; ; i = (i + 1) & mask {
		s := t.slots[i]
		if s == 0 {
			return 0, false
		}
		if id := s - 1; t.parent[id] == parent && t.baseEqual(id, base) {
			return id, true
		}
	}
}

// add gives base in parent the next ID; base must not be there yet.
func (t *nameTable) add(parent uint32, base string, kind uint8) (uint32, error) {
	id := uint32(len(t.kind))
	if len(t.names)+len(base) > 1<<32-1 || id == 1<<32-1 {
		return 0, fmt.Errorf("%w: TOC names exceed 4 GiB", ErrTooLarge)
	}
	t.parent, t.kind = append(t.parent, parent), append(t.kind, kind)
	t.names = append(t.names, base...)
	t.nameEnd = append(t.nameEnd, uint32(len(t.names)))
	if 2*len(t.kind) > len(t.slots) {
		t.grow()
	}
	t.insert(id)
	return id, nil
}

func (t *nameTable) insert(id uint32) {
	mask := uint64(len(t.slots) - 1)
	i := t.hash(t.parent[id], t.base(id)) & mask
	for t.slots[i] != 0 {
		i = (i + 1) & mask
	}
	t.slots[i] = id + 1
}

// reserve sizes the table for ids entries of names bytes of base names in
// all.
func (t *nameTable) reserve(ids, names int) {
	t.parent = slices.Grow(t.parent, ids-len(t.parent))
	t.kind = slices.Grow(t.kind, ids-len(t.kind))
	t.nameEnd = slices.Grow(t.nameEnd, ids-len(t.nameEnd))
	t.names = slices.Grow(t.names, names-len(t.names))
	n := len(t.slots)
	for n < 2*ids {
		n *= 2
	}
	if n > len(t.slots) {
		t.rehash(n)
	}
}

func (t *nameTable) grow() { t.rehash(2 * len(t.slots)) }

func (t *nameTable) rehash(n int) {
	t.slots = make([]uint32, n)
	for id := uint32(1); id < uint32(len(t.kind)); id++ {
		t.insert(id)
	}
}

// find returns the ID of the clean name, if it has one.
func (t *nameTable) find(name string) (uint32, bool) {
	id := uint32(0)
	for name != "" {
		el, rest, _ := strings.Cut(name, "/")
		var ok bool
		if id, ok = t.lookup(id, el); !ok {
			return 0, false
		}
		name = rest
	}
	return id, true
}

// fullName rebuilds the clean name of id.
func (t *nameTable) fullName(id uint32) string {
	var els []string
	for ; id != 0; id = t.parent[id] {
		els = append(els, t.base(id))
	}
	for i, j := 0, len(els)-1; i < j; i, j = i+1, j-1 {
		els[i], els[j] = els[j], els[i]
	}
	return strings.Join(els, "/")
}
