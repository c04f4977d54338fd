package fetch

import (
	"bytes"
	"debug/elf"
	"encoding/binary"
)

// ldCache is a parsed /etc/ld.so.cache (glibc's "glibc-ld.so.cache1.1"
// format, alone or after the old "ld.so-1.7.0" table): library name →
// paths with the entry's flags, in the file's order.
type ldCache map[string][]ldCacheEntry

type ldCacheEntry struct {
	flags int32
	path  string
}

const ldCacheMagic = "glibc-ld.so.cache1.1"

// ld.so.cache flags: the type (FLAG_ELF_LIBC6) and, in the high byte, the
// architecture of a library.
const (
	ldFlagTypeMask = 0x00ff
	ldFlagArchMask = 0xff00
	ldFlagLibc6    = 0x0003
)

// ldCacheArch is the architecture flag of the libraries a machine's ELF
// files load (glibc's FLAG_X8664_LIB64, FLAG_AARCH64_LIB64, ...); -1 when
// any will do.
func ldCacheArch(m elf.Machine) int32 {
	switch m {
	case elf.EM_X86_64:
		return 0x0300
	case elf.EM_AARCH64:
		return 0x0a00
	case elf.EM_386, elf.EM_ARM:
		return 0
	}
	return -1
}

// parseLDCache reads the new-format table of an ld.so.cache; nil if it
// has none. Entries whose strings lie outside the file are skipped.
func parseLDCache(b []byte) ldCache {
	base := bytes.Index(b, []byte(ldCacheMagic))
	if base < 0 {
		return nil
	}
	const hdrLen, entLen = 48, 24
	h := b[base:]
	if len(h) < hdrLen {
		return nil
	}
	n := int(binary.LittleEndian.Uint32(h[20:]))
	bo := binary.ByteOrder(binary.LittleEndian)
	if n < 0 || n > (len(h)-hdrLen)/entLen {
		// a big-endian cache: the count reads absurdly little-endian
		bo = binary.BigEndian
		n = int(bo.Uint32(h[20:]))
		if n < 0 || n > (len(h)-hdrLen)/entLen {
			return nil
		}
	}
	str := func(o uint32) (string, bool) {
		if int(o) >= len(h) {
			return "", false
		}
		s := h[o:]
		i := bytes.IndexByte(s, 0)
		if i < 0 {
			return "", false
		}
		return string(s[:i]), true
	}
	c := ldCache{}
	for i := range n {
		e := h[hdrLen+i*entLen:]
		flags := int32(bo.Uint32(e))
		key, ok1 := str(bo.Uint32(e[4:]))
		val, ok2 := str(bo.Uint32(e[8:]))
		if !ok1 || !ok2 || flags&ldFlagTypeMask != ldFlagLibc6 {
			continue
		}
		c[key] = append(c[key], ldCacheEntry{flags: flags, path: val})
	}
	return c
}

// lookup returns the paths the cache gives for name, those of m's
// architecture first.
func (c ldCache) lookup(name string, m elf.Machine) []string {
	arch := ldCacheArch(m)
	var mine, other []string
	for _, e := range c[name] {
		if arch < 0 || e.flags&ldFlagArchMask == arch {
			mine = append(mine, e.path)
		} else {
			other = append(other, e.path)
		}
	}
	return append(mine, other...)
}
