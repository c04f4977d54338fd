package fetch

import (
	"bytes"
	"debug/elf"
	"encoding/binary"
	"errors"
	"path"
	"strings"

	"github.com/lazysnap/lazysnap/index"
)

// The dynamic loader's reads, told by the image: an ELF file's program
// headers name its interpreter (PT_INTERP) and its dynamic section
// (PT_DYNAMIC), whose DT_NEEDED entries name the libraries the loader opens
// next, one after another, each a cold miss of its own. elfDeps reads them
// from the chunks of the file that are present, and says which chunks it
// still needs when they are not.

// errMissing: a region of a file is not present yet; the chunks it needs
// are in missingErr.
var errMissing = errors.New("fetch: chunks not present")

// missingErr names the chunks (indexes in the file) a read needs.
type missingErr struct{ chunks []int }

func (e *missingErr) Error() string { return errMissing.Error() }
func (e *missingErr) Unwrap() error { return errMissing }

// presentReader reads the present bytes of one file of a layer.
type presentReader struct {
	l   *Layer
	ino index.Ino
}

// read returns the n bytes at off if every chunk they lie in is present,
// else a *missingErr naming those chunks.
func (r presentReader) read(off, n int64) ([]byte, error) {
	size := r.l.idx.Attr(r.ino).Size
	if off < 0 || n < 0 || off+n > size {
		return nil, errors.New("fetch: ELF region outside the file")
	}
	if n == 0 {
		return nil, nil
	}
	first, last := r.l.idx.ChunkIndex(r.ino, off), r.l.idx.ChunkIndex(r.ino, off+n-1)
	var missing []int
	for i := first; i <= last; i++ {
		if !r.l.isPresent(r.l.idx.ChunkID(r.ino, i)) {
			missing = append(missing, i)
		}
	}
	if len(missing) > 0 {
		return nil, &missingErr{missing}
	}
	f, err := r.l.File(r.ino)
	if err != nil {
		return nil, err
	}
	b := make([]byte, n)
	if _, err := f.ReadAt(b, off); err != nil {
		return nil, err
	}
	return b, nil
}

// elfInfo is what the loader needs of an ELF file: its interpreter and
// the libraries it names, with where to look for them.
type elfInfo struct {
	machine elf.Machine
	class   elf.Class
	interp  string
	needed  []string
	runpath []string // DT_RUNPATH, else DT_RPATH
}

// Bounds on what is read of a file that claims to be ELF: a program header
// table, interpreter path, dynamic section and string table larger than
// these are not a loader's ordinary work and are not followed.
const (
	maxPhnum    = 128
	maxInterp   = 4096
	maxDynamic  = 64 << 10
	maxDynstr   = 4 << 20
	maxNeeded   = 256
	elfHdr64Len = 64
)

// parseELF reads the ELF headers of a file of size bytes through read
// (a presentReader's) as far as it can. It returns what it found, and
// read's *missingErr when it needs more chunks (the interpreter may be
// known then, the libraries not yet), or another error when the file is
// not a dynamically linked ELF file it can read.
func parseELF(read func(off, n int64) ([]byte, error), size int64) (elfInfo, error) {
	var info elfInfo
	if size < elfHdr64Len {
		return info, errors.New("fetch: not ELF")
	}
	hdr, err := read(0, elfHdr64Len)
	if err != nil {
		return info, err
	}
	if !bytes.Equal(hdr[:4], []byte(elf.ELFMAG)) {
		return info, errors.New("fetch: not ELF")
	}
	info.class = elf.Class(hdr[elf.EI_CLASS])
	var bo binary.ByteOrder
	switch elf.Data(hdr[elf.EI_DATA]) {
	case elf.ELFDATA2LSB:
		bo = binary.LittleEndian
	case elf.ELFDATA2MSB:
		bo = binary.BigEndian
	default:
		return info, errors.New("fetch: ELF byte order")
	}
	info.machine = elf.Machine(bo.Uint16(hdr[18:]))
	var phoff, phentsize, phnum, wantEnt int64
	switch info.class {
	case elf.ELFCLASS64:
		phoff, phentsize, phnum, wantEnt = int64(bo.Uint64(hdr[32:])), int64(bo.Uint16(hdr[54:])), int64(bo.Uint16(hdr[56:])), 56
	case elf.ELFCLASS32:
		phoff, phentsize, phnum, wantEnt = int64(bo.Uint32(hdr[28:])), int64(bo.Uint16(hdr[42:])), int64(bo.Uint16(hdr[44:])), 32
	default:
		return info, errors.New("fetch: ELF class")
	}
	if phnum == 0 || phnum > maxPhnum || phentsize < wantEnt || phoff <= 0 || phoff+phnum*phentsize > size {
		return info, errors.New("fetch: ELF program headers")
	}
	ph, err := read(phoff, phnum*phentsize)
	if err != nil {
		return info, err
	}
	type prog struct{ typ, off, vaddr, filesz int64 }
	progs := make([]prog, phnum)
	for i := range progs {
		p := ph[int64(i)*phentsize:]
		if info.class == elf.ELFCLASS64 {
			progs[i] = prog{int64(bo.Uint32(p)), int64(bo.Uint64(p[8:])), int64(bo.Uint64(p[16:])), int64(bo.Uint64(p[32:]))}
		} else {
			progs[i] = prog{int64(bo.Uint32(p)), int64(bo.Uint32(p[4:])), int64(bo.Uint32(p[8:])), int64(bo.Uint32(p[16:]))}
		}
	}
	var dyn *prog
	for i := range progs {
		p := &progs[i]
		switch elf.ProgType(p.typ) {
		case elf.PT_INTERP:
			if p.filesz <= 0 || p.filesz > maxInterp || p.off < 0 || p.off+p.filesz > size {
				continue
			}
			b, err := read(p.off, p.filesz)
			if err != nil {
				return info, err
			}
			info.interp = string(bytes.TrimRight(b, "\x00"))
		case elf.PT_DYNAMIC:
			dyn = p
		}
	}
	if dyn == nil { // static: no libraries
		return info, nil
	}
	if dyn.filesz <= 0 || dyn.filesz > maxDynamic || dyn.off < 0 || dyn.off+dyn.filesz > size {
		return info, errors.New("fetch: ELF dynamic section")
	}
	d, err := read(dyn.off, dyn.filesz)
	if err != nil {
		return info, err
	}
	entLen := int64(16)
	if info.class == elf.ELFCLASS32 {
		entLen = 8
	}
	var needed, paths []int64
	var strtab, strsz int64 = -1, 0
	for o := int64(0); o+entLen <= int64(len(d)); o += entLen {
		var tag, val int64
		if entLen == 16 {
			tag, val = int64(bo.Uint64(d[o:])), int64(bo.Uint64(d[o+8:]))
		} else {
			tag, val = int64(int32(bo.Uint32(d[o:]))), int64(bo.Uint32(d[o+4:]))
		}
		switch elf.DynTag(tag) {
		case elf.DT_NULL:
			o = int64(len(d))
		case elf.DT_NEEDED:
			if len(needed) < maxNeeded {
				needed = append(needed, val)
			}
		case elf.DT_STRTAB:
			strtab = val
		case elf.DT_STRSZ:
			strsz = val
		case elf.DT_RUNPATH:
			paths = append([]int64{val}, paths...) // RUNPATH wins over RPATH
		case elf.DT_RPATH:
			paths = append(paths, val)
		}
	}
	if len(needed) == 0 {
		return info, nil
	}
	// DT_STRTAB is an address: find the file offset of the segment that
	// maps it
	stroff := int64(-1)
	for _, p := range progs {
		if elf.ProgType(p.typ) == elf.PT_LOAD && strtab >= p.vaddr && strtab < p.vaddr+p.filesz {
			stroff = p.off + strtab - p.vaddr
			break
		}
	}
	if stroff < 0 || strsz <= 0 || strsz > maxDynstr || stroff+strsz > size {
		return info, errors.New("fetch: ELF string table")
	}
	strs, err := read(stroff, strsz)
	if err != nil {
		return info, err
	}
	str := func(o int64) string {
		if o < 0 || o >= int64(len(strs)) {
			return ""
		}
		s := strs[o:]
		if i := bytes.IndexByte(s, 0); i >= 0 {
			s = s[:i]
		}
		return string(s)
	}
	for _, o := range needed {
		if s := str(o); s != "" {
			info.needed = append(info.needed, s)
		}
	}
	if len(paths) > 0 {
		for _, dir := range strings.Split(str(paths[0]), ":") {
			if dir != "" && !strings.Contains(dir, "$") { // $ORIGIN and the like: not followed
				info.runpath = append(info.runpath, dir)
			}
		}
	}
	return info, nil
}

// resolvePath finds p in the layer, following symbolic links (at most 40,
// as the kernel does), and returns a regular file's Ino.
func (l *Layer) resolvePath(p string) (index.Ino, bool) {
	links := 0
	var stack []index.Ino // the directories walked, for ".."
	ino := index.Root
	rest := strings.Split(p, "/")
	for len(rest) > 0 {
		el := rest[0]
		rest = rest[1:]
		switch el {
		case "", ".":
			continue
		case "..":
			if n := len(stack); n > 0 {
				ino, stack = stack[n-1], stack[:n-1]
			}
			continue
		}
		if !l.idx.IsDir(ino) {
			return 0, false
		}
		next, ok := l.idx.Lookup(ino, el)
		if !ok {
			return 0, false
		}
		if target, isLink := l.idx.Readlink(next); isLink {
			if links++; links > 40 {
				return 0, false
			}
			if strings.HasPrefix(target, "/") {
				ino, stack = index.Root, nil
			}
			rest = append(strings.Split(target, "/"), rest...)
			continue
		}
		stack = append(stack, ino)
		ino = next
	}
	return ino, l.idx.IsRegular(ino)
}

// multiarch is the Debian multiarch triple of a machine, for the default
// library directories.
func multiarch(m elf.Machine, c elf.Class) string {
	switch m {
	case elf.EM_X86_64:
		return "x86_64-linux-gnu"
	case elf.EM_AARCH64:
		return "aarch64-linux-gnu"
	case elf.EM_386:
		return "i386-linux-gnu"
	case elf.EM_ARM:
		return "arm-linux-gnueabihf"
	case elf.EM_PPC64:
		return "powerpc64le-linux-gnu"
	case elf.EM_S390:
		return "s390x-linux-gnu"
	case elf.EM_RISCV:
		if c == elf.ELFCLASS64 {
			return "riscv64-linux-gnu"
		}
	}
	return ""
}

// findLibrary resolves a DT_NEEDED name as the loader would: a name with a
// slash as a path, else through the file's run path, the layer's
// ld.so.cache, then the default directories.
func (l *Layer) findLibrary(info *elfInfo, name string, cache ldCache) (index.Ino, bool) {
	if strings.Contains(name, "/") {
		return l.resolvePath(name)
	}
	for _, dir := range info.runpath {
		if ino, ok := l.resolvePath(path.Join(dir, name)); ok {
			return ino, true
		}
	}
	for _, p := range cache.lookup(name, info.machine) {
		if ino, ok := l.resolvePath(p); ok {
			return ino, true
		}
	}
	var dirs []string
	if t := multiarch(info.machine, info.class); t != "" {
		dirs = append(dirs, "/lib/"+t, "/usr/lib/"+t)
	}
	if info.class == elf.ELFCLASS64 {
		dirs = append(dirs, "/lib64", "/usr/lib64")
	}
	for _, dir := range append(dirs, "/lib", "/usr/lib", "/usr/local/lib") {
		if ino, ok := l.resolvePath(dir + "/" + name); ok {
			return ino, true
		}
	}
	return 0, false
}
