package fetch

import (
	"strconv"
	"strings"

	"github.com/lazysnap/lazysnap/index"
)

// CPython's start, told by the interpreter's name: an executable named
// pythonX.Y reads, at every start and before any module of the program's,
// the files pyStartPaths lists (measured on Debian's CPython 3.11,
// fs/testdata/python-hello.files): the C library's UTF-8 locale and gconv
// cache and the local time zone, the encodings package with its aliases
// and the UTF-8 codec (the standard streams' encoding; found through the
// codec registry, which no import names), and Debian's sitecustomize.
// Before 3.11, site and what it imports are read from their .pyc files as
// well (pyFrozen). Each .pyc predicted is looked at in turn (its imports).
// Paths the layer lacks are passed over.

// pyStartPaths returns the files CPython's start reads, for the
// interpreter named name (pythonX.Y) on a machine of multiarch triple
// triple; nil for any other name.
func pyStartPaths(name, triple string) []string {
	ver, ok := strings.CutPrefix(name, "python")
	major, minor, ok2 := strings.Cut(ver, ".")
	if !ok || !ok2 || major != "3" {
		return nil
	}
	m, err := strconv.Atoi(minor)
	if err != nil || m < 0 || m > 99 || strconv.Itoa(m) != minor {
		return nil
	}
	tag := ".cpython-3" + minor + ".pyc"
	paths := []string{"/usr/lib/locale/C.utf8/LC_CTYPE", "/usr/lib/locale/C.UTF-8/LC_CTYPE", "/etc/localtime"}
	if triple != "" {
		paths = append(paths, "/usr/lib/"+triple+"/gconv/gconv-modules.cache")
	}
	paths = append(paths, "/usr/lib64/gconv/gconv-modules.cache")
	for _, lib := range []string{"/usr/lib/python" + ver, "/usr/local/lib/python" + ver} {
		enc := lib + "/encodings/__pycache__/"
		paths = append(paths, enc+"__init__"+tag, enc+"aliases"+tag, enc+"utf_8"+tag, lib+"/__pycache__/sitecustomize"+tag)
		if m < 11 {
			paths = append(paths, lib+"/__pycache__/site"+tag)
		}
	}
	return paths
}

// pyStart returns the files of the layer that CPython's start reads when
// ino, an executable of info's machine, is the interpreter (pyStartPaths);
// none for another file.
func (l *Layer) pyStart(ino index.Ino, info *elfInfo) []index.Ino {
	name, ok := l.nameOf(ino)
	if !ok || !strings.HasPrefix(name, "python") || l.idx.Attr(ino).Mode&0o111 == 0 {
		return nil
	}
	var out []index.Ino
	for _, p := range pyStartPaths(name, multiarch(info.machine, info.class)) {
		if f, ok := l.resolvePath(p); ok && f != ino {
			out = append(out, f)
		}
	}
	return out
}
