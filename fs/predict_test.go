package fs_test

import (
	"archive/tar"
	"bytes"
	"context"
	"debug/elf"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"

	"github.com/lazysnap/lazysnap/estargz"
	"github.com/lazysnap/lazysnap/fs/fetch"
)

// elfImage is a little-endian x86-64 ELF file of size bytes (random
// filler) whose program headers name interp (if not "") and a dynamic
// section at dynAt needing the libraries needed, its string table at 0x400.
func elfImage(rng *rand.Rand, size int, interp string, dynAt int, needed ...string) []byte {
	b := make([]byte, size)
	for i := range b {
		b[i] = byte(rng.IntN(256))
	}
	le := binary.LittleEndian
	const vaddr, phoff, interpAt, strAt = 0x400000, 64, 0x200, 0x400
	copy(b, elf.ELFMAG)
	b[elf.EI_CLASS], b[elf.EI_DATA], b[elf.EI_VERSION], b[elf.EI_OSABI] = byte(elf.ELFCLASS64), byte(elf.ELFDATA2LSB), 1, 0
	clear(b[8:16])
	le.PutUint16(b[16:], uint16(elf.ET_DYN))
	le.PutUint16(b[18:], uint16(elf.EM_X86_64))
	le.PutUint32(b[20:], 1)
	le.PutUint64(b[24:], vaddr)
	le.PutUint64(b[32:], phoff)
	le.PutUint64(b[40:], 0) // no section headers
	le.PutUint32(b[48:], 0)
	le.PutUint16(b[52:], 64)
	le.PutUint16(b[54:], 56)
	le.PutUint16(b[58:], 64)
	le.PutUint16(b[60:], 0)
	le.PutUint16(b[62:], 0)
	var strs []byte
	strs = append(strs, 0)
	var offs []int
	for _, n := range needed {
		offs = append(offs, len(strs))
		strs = append(append(strs, n...), 0)
	}
	copy(b[strAt:], strs)
	dyn := []uint64{}
	for _, o := range offs {
		dyn = append(dyn, uint64(elf.DT_NEEDED), uint64(o))
	}
	dyn = append(dyn, uint64(elf.DT_STRTAB), vaddr+strAt, uint64(elf.DT_STRSZ), uint64(len(strs)), uint64(elf.DT_NULL), 0)
	for i, v := range dyn {
		le.PutUint64(b[dynAt+8*i:], v)
	}
	type prog struct {
		typ          elf.ProgType
		off, filesz  int
		vaddrOfFile0 bool
	}
	progs := []prog{{elf.PT_LOAD, 0, size, true}, {elf.PT_DYNAMIC, dynAt, 8 * len(dyn), true}}
	if interp != "" {
		copy(b[interpAt:], interp+"\x00")
		progs = append(progs, prog{elf.PT_INTERP, interpAt, len(interp) + 1, true})
	}
	le.PutUint16(b[56:], uint16(len(progs)))
	for i, p := range progs {
		h := b[phoff+56*i:]
		le.PutUint32(h, uint32(p.typ))
		le.PutUint32(h[4:], uint32(elf.PF_R))
		le.PutUint64(h[8:], uint64(p.off))
		le.PutUint64(h[16:], uint64(vaddr+p.off))
		le.PutUint64(h[24:], uint64(vaddr+p.off))
		le.PutUint64(h[32:], uint64(p.filesz))
		le.PutUint64(h[40:], uint64(p.filesz))
		le.PutUint64(h[48:], 0x1000)
	}
	return b
}

// ldSoCache is an ld.so.cache in glibc's new format listing the x86-64
// libraries libs (name → path).
func ldSoCache(libs [][2]string) []byte {
	le := binary.LittleEndian
	const hdr, ent = 48, 24
	strAt := hdr + ent*len(libs)
	var strs []byte
	b := make([]byte, strAt)
	copy(b, "glibc-ld.so.cache1.1")
	le.PutUint32(b[20:], uint32(len(libs)))
	for i, l := range libs {
		e := b[hdr+ent*i:]
		le.PutUint32(e, 0x0303) // libc6, x86-64
		le.PutUint32(e[4:], uint32(strAt+len(strs)))
		strs = append(append(strs, l[0]...), 0)
		le.PutUint32(e[8:], uint32(strAt+len(strs)))
		strs = append(append(strs, l[1]...), 0)
	}
	le.PutUint32(b[24:], uint32(len(strs)))
	return append(b, strs...)
}

// loaderTar is a layer laid out as a dynamically linked program's: the
// program, its interpreter (through a symbolic link, as /lib64 is),
// ld.so.cache, a library found through it (a link to the versioned file),
// one found in a default directory, one that library needs, and unrelated
// files between them all; the chunks are 256 KiB (more than the kernel
// reads ahead), so the dynamic sections of the program (executable: it
// comes whole) and of libfoo (not) lie in chunks after their headers'.
func loaderTar(t *testing.T) []byte {
	t.Helper()
	rng := rand.New(rand.NewPCG(7, 8))
	random := func(n int) []byte { return randomBytes(rng, n) }
	const libdir = "usr/lib/x86_64-linux-gnu/"
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	n := 0
	file := func(name string, data []byte) {
		mode := int64(0o644)
		if filepath.Dir(name) == "usr/bin" {
			mode = 0o755
		}
		tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: mode, Size: int64(len(data))})
		tw.Write(data)
		n++ // an unrelated file after each, that nothing may fetch
		tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: name + ".unrelated", Mode: 0o644, Size: 20 << 10})
		tw.Write(random(20 << 10))
	}
	link := func(name, target string) {
		tw.WriteHeader(&tar.Header{Typeflag: tar.TypeSymlink, Name: name, Linkname: target, Mode: 0o777})
	}
	for _, d := range []string{"etc/", "lib64/", "usr/", "usr/bin/", "usr/lib/", libdir} {
		tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: d, Mode: 0o755})
	}
	file("etc/ld.so.cache", ldSoCache([][2]string{{"libfoo.so.1", "/lib/x86_64-linux-gnu/libfoo.so.1"}}))
	link("lib", "usr/lib")
	link("lib64/ld-linux-x86-64.so.2", "/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2")
	file(libdir+"ld-linux-x86-64.so.2", elfImage(rng, 30<<10, "", 0x800))
	file("usr/bin/prog", elfImage(rng, 1<<20, "/lib64/ld-linux-x86-64.so.2", 900<<10, "libfoo.so.1", "libbar.so.2"))
	file(libdir+"libfoo.so.1.0", elfImage(rng, 600<<10, "", 500<<10, "libbaz.so"))
	link(libdir+"libfoo.so.1", "libfoo.so.1.0")
	file(libdir+"libbar.so.2", elfImage(rng, 40<<10, "", 0x800))
	file("usr/lib/libbaz.so", elfImage(rng, 40<<10, "", 0x800))
	file("usr/bin/notelf", random(100<<10))
	tw.Close()
	return buf.Bytes()
}

// loaderReads are what exec and the loader read of loaderTar's program,
// in order: path, offset, length.
var loaderReads = []struct {
	path    string
	off, n  int64
	comment string
}{
	{"usr/bin/prog", 0, 4096, "exec: the headers"},
	// the interpreter, by the link's target: an absolute link in the
	// mount leads out of it
	{"usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2", 0, 4096, "exec: the interpreter"},
	{"usr/bin/prog", 900 << 10, 4096, "the loader: the program's dynamic section"},
	{"etc/ld.so.cache", 0, 4096, "the loader: its cache"},
	{"usr/lib/x86_64-linux-gnu/libfoo.so.1", 0, 4096, "through ld.so.cache"},
	{"usr/lib/x86_64-linux-gnu/libfoo.so.1", 500 << 10, 4096, "libfoo's dynamic section"},
	{"usr/lib/x86_64-linux-gnu/libbar.so.2", 0, 4096, "a default directory"},
	{"usr/lib/libbaz.so", 0, 4096, "libfoo's library"},
}

// TestPredictLoader replays what exec and the dynamic loader read of a
// program (its first page, then the interpreter, ld.so.cache, the
// program's dynamic section and each library in turn) against a layer,
// and counts the requests made by the reads after the first: one for each
// without prediction, none with it (what the first read's chunk says comes
// next is fetched in parallel while it is answered), and nothing unrelated
// fetched.
func TestPredictLoader(t *testing.T) {
	tarball := loaderTar(t)
	reads := loaderReads
	for _, tc := range []struct {
		name          string
		noPredict     bool
		multi         bool  // the blob reads several ranges in one request
		wantLater     int64 // requests made by the reads after the first
		wantPredicted int64
		wantRequests  int64
		wantPresent   int
	}{
		// the program whole (its 3 chunks after the first predicted); with
		// its first chunk the interpreter and ld.so.cache; with its
		// dynamic section libfoo whole (3 chunks: a library is mapped
		// whole) and libbar; libbaz
		{name: "predicted", wantLater: 0, wantPredicted: 10, wantPresent: 11, wantRequests: 6},
		{name: "predicted, multi-range requests", multi: true, wantLater: 0, wantPredicted: 10, wantPresent: 11, wantRequests: 4},
		{name: "off: one miss after another", noPredict: true, wantLater: 7, wantPresent: 8, wantRequests: 8},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l, blob := layerOver(t, tarball, fetch.Options{NoPrefetch: true, NoBackground: true, ReadAround: -1, NoPredict: tc.noPredict},
				func(b *memBlob) fetch.BlobReader {
					if tc.multi {
						return multiBlob{b}
					}
					return b
				}, estargz.WithChunkSize(256<<10))
			mnt, _ := mount(t, l)
			var first int64
			for i, r := range reads {
				f, err := os.Open(filepath.Join(mnt, r.path))
				if err != nil {
					t.Fatal(err)
				}
				n, err := f.ReadAt(make([]byte, r.n), r.off)
				f.Close() // before any Fatal: an open file keeps the mount busy
				if n == 0 || err != nil && err != io.EOF {
					t.Fatalf("%s (%s): read %d bytes: %v", r.path, r.comment, n, err)
				}
				// what the read set going arrives before the next read, as
				// it does over a link while the reader runs
				waitFor(t, "fetches done", func() bool { st := l.Stats(); return st.InFlight == 0 && st.Predicting == 0 })
				if i == 0 {
					first = blob.requests.Load()
				}
			}
			st := l.Stats()
			if later := blob.requests.Load() - first; later != tc.wantLater {
				t.Errorf("the reads after the first made %d requests, want %d", later, tc.wantLater)
			}
			if st.ChunksPresent != tc.wantPresent {
				t.Errorf("%d chunks present, want %d", st.ChunksPresent, tc.wantPresent)
			}
			if n := blob.requests.Load(); n != tc.wantRequests {
				t.Errorf("%d requests, want %d", n, tc.wantRequests)
			}
			if st.PredictedChunks != tc.wantPredicted {
				t.Errorf("%d chunks predicted, want %d", st.PredictedChunks, tc.wantPredicted)
			}
			t.Logf("%d requests, %d bytes, %d predicted", blob.requests.Load(), blob.bytes.Load(), st.PredictedChunks)
		})
	}
}

// multiBlob is a memBlob that reads several ranges in one request.
type multiBlob struct{ *memBlob }

func (b multiBlob) ReadMultiRange(ctx context.Context, ranges []fetch.Range) ([][]byte, error) {
	b.requests.Add(1)
	out := make([][]byte, len(ranges))
	for i, r := range ranges {
		if r.Off < 0 || r.Off+r.Len > int64(len(b.data)) {
			return nil, errors.New("range outside blob")
		}
		b.bytes.Add(r.Len)
		out[i] = bytes.Clone(b.data[r.Off : r.Off+r.Len])
	}
	return out, nil
}

// TestReadAroundKeepsToDirectory: read-around fetches the small files of
// the read file's directory, and those of a subdirectory between them in
// the blob, not those of the directory after it; a directory's later cold
// misses read around more.
func TestReadAroundKeepsToDirectory(t *testing.T) {
	rng := rand.New(rand.NewPCG(9, 10))
	random := func(n int) []byte { return randomBytes(rng, n) }
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	add := func(name string) {
		data := random(2000)
		tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: 0o644, Size: int64(len(data))})
		tw.Write(data)
	}
	// a's files, a subdirectory's, a's again (tar order), then b's
	for i := range 40 {
		add(fmt.Sprintf("a/m%02d", i))
	}
	for i := range 5 {
		add(fmt.Sprintf("a/sub/s%02d", i))
	}
	for i := range 5 {
		add(fmt.Sprintf("a/n%02d", i))
	}
	for i := range 40 {
		add(fmt.Sprintf("b/m%02d", i))
	}
	tw.Close()
	for _, tc := range []struct {
		name        string
		reads       []string
		readAround  int64
		wantPresent int
	}{
		// 10 KiB: the file and 4 more; the next directory's files, close
		// by, are not read around
		{name: "not into a subdirectory after", reads: []string{"a/m38"}, readAround: 12 << 10, wantPresent: 2},
		// 24 KiB: 3 back (1 file), 21 forwards (10)
		{name: "past a subdirectory to the directory's files after it", reads: []string{"a/m38"}, readAround: 24 << 10, wantPresent: 1 + 1 + 10},
		{name: "not into the next directory", reads: []string{"a/n02"}, readAround: 24 << 10, wantPresent: 1 + 1 + 2},
		{name: "budget", reads: []string{"a/m00"}, readAround: 12 << 10, wantPresent: 6},
		// the second miss reads around twice as much, the third four times
		{name: "a directory's second miss", reads: []string{"a/m00", "a/m06"}, readAround: 12 << 10, wantPresent: 6 + 11},
		{name: "its third", reads: []string{"a/m00", "a/m06", "a/m17"}, readAround: 12 << 10, wantPresent: 6 + 11 + 21},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l, _ := layerOf(t, buf.Bytes(), fetch.Options{NoPrefetch: true, NoBackground: true, ReadAround: tc.readAround}, estargz.WithChunkSize(64<<10))
			mnt, _ := mount(t, l)
			for _, name := range tc.reads {
				if _, err := os.ReadFile(filepath.Join(mnt, name)); err != nil {
					t.Fatal(err)
				}
				waitFor(t, "read-around stored", func() bool { st := l.Stats(); return st.InFlight == 0 && st.Predicting == 0 })
			}
			if st := l.Stats(); st.ChunksPresent != tc.wantPresent {
				t.Errorf("%d chunks present, want %d", st.ChunksPresent, tc.wantPresent)
			}
		})
	}
}

// TestExecutableRestOnFirstRead: an executable whose first chunk is
// present already (prefetched, read around, or in a SOCI span something
// else read) is fetched whole on its first read from the start, as on a
// cold one: exec's later page faults then make no request of their own.
func TestExecutableRestOnFirstRead(t *testing.T) {
	rng := rand.New(rand.NewPCG(9, 10))
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: "usr/", Mode: 0o755})
	tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: "usr/bin/", Mode: 0o755})
	for _, f := range []struct {
		name string
		mode int64
	}{{"usr/bin/tool", 0o755}, {"usr/bin/data", 0o644}} {
		tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: f.name, Mode: f.mode, Size: 1 << 20})
		tw.Write(randomBytes(rng, 1<<20))
	}
	tw.Close()
	for _, tc := range []struct {
		name      string
		path      string
		noPredict bool
		wantLater int64 // requests made by the read near the end
	}{
		{name: "executable", path: "usr/bin/tool", wantLater: 0},
		{name: "not executable", path: "usr/bin/data", wantLater: 1},
		{name: "prediction off", path: "usr/bin/tool", noPredict: true, wantLater: 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l, blob := layerOver(t, buf.Bytes(), fetch.Options{NoPrefetch: true, NoBackground: true, ReadAround: -1, NoPredict: tc.noPredict},
				func(b *memBlob) fetch.BlobReader { return b }, estargz.WithChunkSize(256<<10))
			mnt, _ := mount(t, l)
			// its first chunk present, as a SOCI span read for another file
			// leaves it, without a read of it
			if tc.noPredict {
				ino, ok := l.Index().LookupPath("/" + tc.path)
				if !ok {
					t.Fatalf("%s not in the index", tc.path)
				}
				if err := l.Ensure(context.Background(), ino, 0, 0); err != nil {
					t.Fatal(err)
				}
			} else if n := l.PredictFiles([]string{"/" + tc.path}); n != 1 {
				t.Fatalf("PredictFiles found %d files, want 1", n)
			}
			waitFor(t, "fetches done", func() bool { st := l.Stats(); return st.InFlight == 0 && st.Predicting == 0 })
			f, err := os.Open(filepath.Join(mnt, tc.path))
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			if _, err := f.ReadAt(make([]byte, 4096), 0); err != nil {
				t.Fatal(err)
			}
			waitFor(t, "fetches done", func() bool { st := l.Stats(); return st.InFlight == 0 && st.Predicting == 0 })
			before := blob.requests.Load()
			if _, err := f.ReadAt(make([]byte, 4096), 900<<10); err != nil {
				t.Fatal(err)
			}
			if later := blob.requests.Load() - before; later != tc.wantLater {
				t.Errorf("the read near the end made %d requests, want %d", later, tc.wantLater)
			}
		})
	}
}
