package fetch

import (
	"strings"

	"github.com/lazysnap/lazysnap/index"
)

// Python's imports, told by the image: a module's .pyc in PKG/__pycache__
// names (pycImports) the modules its body imports; each is looked up as
// CPython's path finder would, relative to PKG and from the sys.path entry
// above it (the first directory up without an __init__.py), as a package
// (its __init__), a module (its .pyc of the same tag) or an extension
// module (NAME.*.so, there or in lib-dynload beside the standard
// library). Only cached modules are followed: a .py without its .pyc is
// compiled, not read by the cache, and rarely in an image.

// maxPycImports bounds the files one module's imports fetch.
const maxPycImports = 64

// pyFrozen reports whether CPython 3.11 and later carry the module frozen
// in the interpreter: its .pyc in the image is never read.
func pyFrozen(name string) bool {
	switch name {
	case "abc", "codecs", "io", "_collections_abc", "_sitebuiltins", "genericpath", "ntpath", "posixpath",
		"os", "os.path", "site", "stat", "importlib.util", "importlib.machinery", "runpy", "zipimport":
		return true
	}
	return false
}

// isPyc reports whether a file's first bytes are a .pyc header pycImports
// reads.
func isPyc(hdr []byte) bool {
	if len(hdr) < 17 || hdr[2] != '\r' || hdr[3] != '\n' {
		return false
	}
	magic := int(hdr[0]) | int(hdr[1])<<8
	return magic >= pycMagic38 && magic < pycMagic313
}

// nameOf returns ino's name in its directory.
func (l *Layer) nameOf(ino index.Ino) (string, bool) {
	var out string
	found := false
	l.idx.ReadDir(l.parentOf(ino), func(name string, child index.Ino) bool {
		if child == ino && name != "." && name != ".." {
			out, found = name, true
			return false
		}
		return true
	})
	return out, found
}

// pyPredictor resolves the imports of one module.
type pyPredictor struct {
	l     *Layer
	tag   string // "cpython-311"
	files []index.Ino
	seen  map[index.Ino]bool
}

func (p *pyPredictor) add(ino index.Ino) {
	if !p.seen[ino] && len(p.files) < maxPycImports {
		p.seen[ino] = true
		p.files = append(p.files, ino)
	}
}

func (p *pyPredictor) lookup(dir index.Ino, name string) (index.Ino, bool) {
	if !p.l.idx.IsDir(dir) {
		return 0, false
	}
	return p.l.idx.Lookup(dir, name)
}

// isPackage reports whether dir is a regular package (has __init__.py).
func (p *pyPredictor) isPackage(dir index.Ino) bool {
	_, ok := p.lookup(dir, "__init__.py")
	return ok
}

// cached adds dir's cached module mod (__pycache__/MOD.TAG.pyc) if the
// image holds it.
func (p *pyPredictor) cached(dir index.Ino, mod string) bool {
	c, ok := p.lookup(dir, "__pycache__")
	if !ok {
		return false
	}
	f, ok := p.lookup(c, mod+"."+p.tag+".pyc")
	if ok && p.l.idx.IsRegular(f) {
		p.add(f)
	}
	return ok
}

// extension adds an extension module mod of dir (MOD.*.so) if there is one.
func (p *pyPredictor) extension(dir index.Ino, mod string) {
	if !p.l.idx.IsDir(dir) {
		return
	}
	p.l.idx.ReadDir(dir, func(name string, child index.Ino) bool {
		if strings.HasPrefix(name, mod+".") && strings.HasSuffix(name, ".so") && p.l.idx.IsRegular(child) {
			p.add(child)
			return false
		}
		return true
	})
}

// module adds what importing dotted (with from) from dir reads: each
// package's __init__ on the way, the module or package at the end, and the
// names taken from a package that are submodules of it. dynload is the
// standard library's lib-dynload, for extension modules at the top.
func (p *pyPredictor) module(dir index.Ino, dotted string, from []string, dynload index.Ino, haveDynload bool) {
	cur := dir
	if dotted != "" {
		parts := strings.Split(dotted, ".")
		for i, part := range parts {
			if sub, ok := p.lookup(cur, part); ok && p.l.idx.IsDir(sub) && p.isPackage(sub) {
				p.cached(sub, "__init__")
				cur = sub
				continue
			}
			if i == len(parts)-1 && !p.cached(cur, part) {
				p.extension(cur, part)
				if i == 0 && haveDynload {
					p.extension(dynload, part)
				}
			}
			return
		}
	}
	for _, f := range from {
		if sub, ok := p.lookup(cur, f); ok && p.l.idx.IsDir(sub) && p.isPackage(sub) {
			p.cached(sub, "__init__")
		} else {
			p.cached(cur, f)
		}
	}
}

// predictPyc returns the files the imports of ino, a present .pyc in
// PKG/__pycache__, will read.
func (l *Layer) predictPyc(ino index.Ino) []index.Ino {
	size := l.idx.Attr(ino).Size
	if size > maxDynstr {
		return nil
	}
	b, err := presentReader{l, ino}.read(0, size)
	if err != nil {
		return nil
	}
	imps, err := pycImports(b)
	if err != nil || len(imps) == 0 {
		return nil
	}
	name, ok := l.nameOf(ino)
	if !ok {
		return nil
	}
	_, tag, ok := pycTag(name)
	cache := l.parentOf(ino)
	if cn, _ := l.nameOf(cache); !ok || cn != "__pycache__" || cache == index.Root {
		return nil
	}
	p := &pyPredictor{l: l, tag: tag, seen: map[index.Ino]bool{ino: true}}
	pkg := l.parentOf(cache)
	root := pkg
	for root != index.Root && p.isPackage(root) {
		root = l.parentOf(root)
	}
	dynload, haveDynload := p.lookup(root, "lib-dynload")
	frozen := tag >= "cpython-311" && len(tag) == len("cpython-311")
	for _, imp := range imps {
		if frozen && pyFrozen(imp.name) {
			continue
		}
		p.module(pkg, imp.name, imp.from, dynload, haveDynload)
		if imp.name != "" && root != pkg {
			p.module(root, imp.name, imp.from, dynload, haveDynload)
		}
	}
	return p.files
}
