package index_test

import (
	"archive/tar"
	"bytes"
	"context"
	"fmt"
	"io"
	"runtime"
	"syscall"
	"testing"
	"time"

	"github.com/lazysnap/lazysnap/estargz"
	"github.com/lazysnap/lazysnap/index"
	"github.com/lazysnap/lazysnap/internal/testtar"
	"github.com/lazysnap/lazysnap/layer"
	"github.com/opencontainers/go-digest"
)

func build(t testing.TB, tarball []byte) (*index.Index, *estargz.Reader) {
	t.Helper()
	var blob bytes.Buffer
	res, err := estargz.Convert(context.Background(), &blob, io.NewSectionReader(bytes.NewReader(tarball), 0, int64(len(tarball))), estargz.WithChunkSize(1<<20))
	if err != nil {
		t.Fatal(err)
	}
	r, err := estargz.Open(io.NewSectionReader(bytes.NewReader(blob.Bytes()), 0, int64(blob.Len())), estargz.WithTOCDigest(res.TOCDigest))
	if err != nil {
		t.Fatal(err)
	}
	x, err := index.Build(r.TOC().Entries, r.TOC().LayerInfo())
	if err != nil {
		t.Fatal(err)
	}
	return x, r
}

var fileType = map[byte]uint32{
	tar.TypeReg: syscall.S_IFREG, tar.TypeDir: syscall.S_IFDIR, tar.TypeSymlink: syscall.S_IFLNK,
	tar.TypeChar: syscall.S_IFCHR, tar.TypeBlock: syscall.S_IFBLK, tar.TypeFifo: syscall.S_IFIFO,
}

func TestIndexMatchesSource(t *testing.T) {
	src, err := testtar.Read(testtar.Synthetic(3 << 20))
	if err != nil {
		t.Fatal(err)
	}
	x, r := build(t, testtar.Synthetic(3<<20))
	for _, name := range testtar.Names(src) {
		h := &src[name].Header
		if bytes.HasPrefix([]byte(pathBase(name)), []byte(".wh.")) {
			continue // checked below
		}
		ino, ok := x.LookupPath(name)
		if !ok {
			t.Errorf("%q not found", name)
			continue
		}
		a := x.Attr(ino)
		if h.Typeflag == tar.TypeLink {
			target, _ := x.LookupPath(h.Linkname)
			if ino != target {
				t.Errorf("hardlink %q is inode %d, target %d", name, ino, target)
			}
			continue
		}
		if want := fileType[h.Typeflag] | uint32(h.Mode&0o7777); a.Mode != want {
			t.Errorf("%q: mode %o, want %o", name, a.Mode, want)
		}
		if a.UID != uint32(h.Uid) || a.GID != uint32(h.Gid) || a.Mtime != h.ModTime.Unix() {
			t.Errorf("%q: owner/mtime %d:%d %d", name, a.UID, a.GID, a.Mtime)
		}
		switch h.Typeflag {
		case tar.TypeReg:
			if a.Size != h.Size || a.Blocks != (h.Size+511)/512 {
				t.Errorf("%q: size %d blocks %d", name, a.Size, a.Blocks)
			}
			e, _ := r.Lookup(name)
			if x.NumChunks(ino) != len(e.Chunks) {
				t.Fatalf("%q: %d chunks, want %d", name, x.NumChunks(ino), len(e.Chunks))
			}
			for i := range e.Chunks {
				if got := x.Chunk(ino, i); got != e.Chunks[i] {
					t.Errorf("%q chunk %d: %+v, want %+v", name, i, got, e.Chunks[i])
				}
				if x.ChunkIndex(ino, e.Chunks[i].FileOffset+e.Chunks[i].Size-1) != i {
					t.Errorf("%q: ChunkIndex at the end of chunk %d", name, i)
				}
			}
			if x.ChunkIndex(ino, h.Size) != -1 {
				t.Errorf("%q: ChunkIndex past the end", name)
			}
		case tar.TypeSymlink:
			if l, ok := x.Readlink(ino); !ok || l != h.Linkname || a.Size != int64(len(h.Linkname)) {
				t.Errorf("%q: readlink %q", name, l)
			}
		case tar.TypeChar, tar.TypeBlock:
			major, minor := a.Rdev>>8&0xfff, a.Rdev&0xff|a.Rdev>>12&^0xff
			if int64(major) != h.Devmajor || int64(minor) != h.Devminor {
				t.Errorf("%q: device %d:%d", name, major, minor)
			}
		}
		for k, v := range testtar.Xattrs(h) {
			if string(x.Xattrs(ino)[k]) != v {
				t.Errorf("%q: xattr %s", name, k)
			}
		}
	}
	tool, _ := x.LookupPath("usr/bin/tool")
	if n := x.Attr(tool).Nlink; n != 3 {
		t.Errorf("usr/bin/tool nlink %d, want 3 (two hardlinks)", n)
	}
	usr, _ := x.LookupPath("usr")
	if n := x.Attr(usr).Nlink; n != 3 {
		t.Errorf("usr nlink %d, want 3 (one subdirectory)", n)
	}
	for _, hidden := range []string{estargz.NoPrefetchLandmark, "x/.wh.deleted", "opaque/.wh..wh..opq"} {
		if _, ok := x.LookupPath(hidden); ok {
			t.Errorf("%q is visible", hidden)
		}
	}
	wh, ok := x.LookupPath("x/deleted")
	if a := x.Attr(wh); !ok || a.Mode != syscall.S_IFCHR || a.Rdev != 0 {
		t.Errorf("whiteout x/deleted: %v %+v, want char 0/0", ok, a)
	}
	op, _ := x.LookupPath("opaque")
	if !x.Attr(op).Opaque || x.Attr(usr).Opaque {
		t.Errorf("opaque flags wrong")
	}
	var names []string
	many, _ := x.LookupPath("many")
	x.ReadDir(many, func(name string, _ index.Ino) bool { names = append(names, name); return true })
	if len(names) != 200 || names[0] != "file-000" || names[199] != "file-199" || x.NumEntries(many) != 200 {
		t.Errorf("ReadDir(many): %d names", len(names))
	}
}

func pathBase(p string) string {
	for i := len(p) - 1; i >= 0; i-- {
		if p[i] == '/' {
			return p[i+1:]
		}
	}
	return p
}

// syntheticTOC is a TOC of n entries: n/100 directories of regular
// one-chunk files, the shape of a large image layer.
func syntheticTOC(n int) *estargz.TOC {
	toc := &estargz.TOC{Version: 1, Offset: 1 << 40, Entries: make([]estargz.Entry, 0, n+1)}
	toc.Entries = append(toc.Entries, estargz.Entry{Type: layer.TypeDir, Mode: 0o755})
	mt := time.Unix(1700000000, 0)
	off := int64(512)
	for i := 0; len(toc.Entries) < n; i++ {
		dir := fmt.Sprintf("usr/share/pkg-%04d", i)
		toc.Entries = append(toc.Entries, estargz.Entry{Name: dir, Type: layer.TypeDir, Mode: 0o755, ModTime: mt})
		for j := 0; j < 99 && len(toc.Entries) < n; j++ {
			d := digest.FromString(fmt.Sprint(i, j))
			toc.Entries = append(toc.Entries, estargz.Entry{
				Name: fmt.Sprintf("%s/file-%02d.txt", dir, j), Type: layer.TypeReg, Mode: 0o644, Size: 1000, ModTime: mt,
				Chunks: []estargz.Chunk{{Offset: off, End: off + 600, Size: 1000, Digest: d}},
			})
			off += 600
		}
	}
	toc.Entries = append([]estargz.Entry{toc.Entries[0], {Name: "usr", Type: layer.TypeDir}, {Name: "usr/share", Type: layer.TypeDir}}, toc.Entries[1:]...)
	return toc
}

// BenchmarkIndex100k reports the heap an index of a 100k-entry TOC holds
// (bytes/entry, measured) and the cost of a path lookup.
func BenchmarkIndex100k(b *testing.B) {
	toc := syntheticTOC(100_000)
	b.Run("build", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := index.Build(toc.Entries, toc.LayerInfo()); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("heap", func(b *testing.B) {
		var before, after runtime.MemStats
		var x *index.Index
		for b.Loop() {
			runtime.GC()
			runtime.ReadMemStats(&before)
			x, _ = index.Build(toc.Entries, toc.LayerInfo())
			runtime.GC()
			runtime.ReadMemStats(&after)
		}
		b.ReportMetric(float64(after.HeapAlloc-before.HeapAlloc)/float64(len(toc.Entries)), "heap-B/entry")
		b.ReportMetric(float64(x.Sizes())/float64(len(toc.Entries)), "slices-B/entry")
		runtime.KeepAlive(x)
	})
	b.Run("lookup", func(b *testing.B) {
		x, _ := index.Build(toc.Entries, toc.LayerInfo())
		b.ReportAllocs()
		i := 0
		for b.Loop() {
			p := fmt.Sprintf("usr/share/pkg-%04d/file-%02d.txt", i%999, i%99)
			if _, ok := x.LookupPath(p); !ok {
				b.Fatalf("%s not found", p)
			}
			i++
		}
	})
}

func TestIndexHeapBudget(t *testing.T) {
	toc := syntheticTOC(100_000)
	x, err := index.Build(toc.Entries, toc.LayerInfo())
	if err != nil {
		t.Fatal(err)
	}
	if per := x.Sizes() / len(toc.Entries); per > 150 {
		t.Fatalf("index holds %d bytes per entry, budget 150", per)
	}
	if _, ok := x.LookupPath("usr/share/pkg-0998/file-98.txt"); !ok {
		t.Fatal("last file not found")
	}
}
