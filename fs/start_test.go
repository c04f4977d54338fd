package fs_test

import (
	"archive/tar"
	"bytes"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"

	"github.com/lazysnap/lazysnap/estargz"
	"github.com/lazysnap/lazysnap/fs/fetch"
)

// TestPredictStart: told at mount which program the container starts
// (the image's entrypoint), the layer fetches it whole and, as after a
// cold read of it, its interpreter, ld.so.cache and libraries, before any
// reader asks; the program's start then reads all of that with no request
// and nothing unrelated was fetched. A program the layer lacks, or
// prediction off, fetches nothing.
func TestPredictStart(t *testing.T) {
	tarball := loaderTar(t)
	for _, tc := range []struct {
		name         string
		paths        []string
		noPredict    bool
		want         string // the path PredictStart predicted from
		wantPresent  int
		wantRequests int64 // by PredictStart's fetches
		replay       bool  // replay the program's start (loaderReads) after them: no request
	}{
		// PATH order: the first directory lacks it. prog's 4 chunks, the
		// interpreter, ld.so.cache, libfoo's 3 chunks, libbar, libbaz
		{name: "on the PATH", paths: []string{"/usr/local/bin/prog", "/usr/bin/prog"}, want: "/usr/bin/prog", wantPresent: 11, wantRequests: 4, replay: true},
		{name: "through a symbolic link", paths: []string{"/lib64/ld-linux-x86-64.so.2"}, want: "/lib64/ld-linux-x86-64.so.2", wantPresent: 1, wantRequests: 1},
		{name: "not in the layer", paths: []string{"/bin/sh"}},
		{name: "prediction off", paths: []string{"/usr/bin/prog"}, noPredict: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l, blob := layerOver(t, tarball, fetch.Options{NoPrefetch: true, NoBackground: true, ReadAround: -1, NoPredict: tc.noPredict},
				func(b *memBlob) fetch.BlobReader { return multiBlob{b} }, estargz.WithChunkSize(256<<10))
			if got := l.PredictStart(tc.paths); got != tc.want {
				t.Errorf("PredictStart(%q) = %q, want %q", tc.paths, got, tc.want)
			}
			waitFor(t, "predicted fetches done", func() bool { st := l.Stats(); return st.InFlight == 0 && st.Predicting == 0 })
			if st := l.Stats(); st.ChunksPresent != tc.wantPresent {
				t.Errorf("%d chunks present, want %d", st.ChunksPresent, tc.wantPresent)
			}
			if n := blob.requests.Load(); n != tc.wantRequests {
				t.Errorf("PredictStart made %d requests, want %d", n, tc.wantRequests)
			}
			if !tc.replay {
				return
			}
			mnt, _ := mount(t, l)
			before := blob.requests.Load()
			for _, r := range loaderReads {
				f, err := os.Open(filepath.Join(mnt, r.path))
				if err != nil {
					t.Fatal(err)
				}
				n, err := f.ReadAt(make([]byte, r.n), r.off)
				f.Close()
				if n == 0 {
					t.Fatalf("%s: read nothing: %v", r.path, err)
				}
			}
			if later := blob.requests.Load() - before; later != 0 {
				t.Errorf("the start made %d requests after the prediction, want none", later)
			}
		})
	}
}

// pythonTar is a layer with a CPython 3.11 interpreter (a dynamically
// linked executable of two chunks), the files its start reads (pyStart)
// and files beside them it does not.
func pythonTar(t *testing.T, interpName string) []byte {
	t.Helper()
	rng := rand.New(rand.NewPCG(11, 12))
	random := func(n int) []byte { return randomBytes(rng, n) }
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, d := range []string{"etc/", "lib64/", "usr/", "usr/bin/", "usr/lib/", "usr/lib/x86_64-linux-gnu/", "usr/lib/locale/", "usr/lib/locale/C.utf8/",
		"usr/lib/python3.11/", "usr/lib/python3.11/__pycache__/", "usr/lib/python3.11/encodings/", "usr/lib/python3.11/encodings/__pycache__/",
		"usr/share/", "usr/share/zoneinfo/", "usr/share/zoneinfo/Etc/"} {
		tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: d, Mode: 0o755})
	}
	file := func(name string, mode int64, data []byte) {
		tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: mode, Size: int64(len(data))})
		tw.Write(data)
	}
	file("usr/bin/"+interpName, 0o755, elfImage(rng, 300<<10, "/lib64/ld-linux-x86-64.so.2", 280<<10))
	tw.WriteHeader(&tar.Header{Typeflag: tar.TypeSymlink, Name: "lib64/ld-linux-x86-64.so.2", Linkname: "../usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2", Mode: 0o777})
	file("usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2", 0o755, elfImage(rng, 30<<10, "", 0x800))
	file("usr/lib/locale/C.utf8/LC_CTYPE", 0o644, random(40<<10))
	file("usr/lib/locale/C.utf8/LC_COLLATE", 0o644, random(40<<10)) // not read
	file("usr/share/zoneinfo/Etc/UTC", 0o644, random(200))
	file("usr/share/zoneinfo/Etc/GMT", 0o644, random(200)) // not read
	tw.WriteHeader(&tar.Header{Typeflag: tar.TypeSymlink, Name: "etc/localtime", Linkname: "/usr/share/zoneinfo/Etc/UTC", Mode: 0o777})
	for _, m := range []string{"__init__", "aliases", "utf_8", "cp1252"} { // cp1252: not read
		file("usr/lib/python3.11/encodings/__pycache__/"+m+".cpython-311.pyc", 0o644, random(8<<10))
	}
	for _, m := range []string{"sitecustomize", "site", "argparse"} { // site: frozen in 3.11
		file("usr/lib/python3.11/__pycache__/"+m+".cpython-311.pyc", 0o644, random(8<<10))
	}
	tw.Close()
	return buf.Bytes()
}

// TestPredictPythonStart: the exec of an interpreter named python3.11
// (its first chunk read) brings, besides the interpreter whole and its
// loader, the files CPython's start reads (the UTF-8 locale, the local
// time zone through /etc/localtime, the encodings package, its aliases
// and UTF-8 codec, sitecustomize), not the files beside them (nor site,
// frozen in 3.11); an executable of another name brings only itself and
// its loader.
func TestPredictPythonStart(t *testing.T) {
	for _, tc := range []struct {
		name, interp string
		wantPresent  int
	}{
		// 2 chunks of the interpreter, the loader, LC_CTYPE, Etc/UTC, 3
		// encodings modules, sitecustomize
		{name: "python3.11", interp: "python3.11", wantPresent: 2 + 1 + 1 + 1 + 3 + 1},
		{name: "another program", interp: "pythonic", wantPresent: 2 + 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l, _ := layerOf(t, pythonTar(t, tc.interp), fetch.Options{NoPrefetch: true, NoBackground: true, ReadAround: -1}, estargz.WithChunkSize(256<<10))
			mnt, _ := mount(t, l)
			f, err := os.Open(filepath.Join(mnt, "usr/bin", tc.interp))
			if err != nil {
				t.Fatal(err)
			}
			_, err = f.ReadAt(make([]byte, 4096), 0)
			f.Close()
			if err != nil {
				t.Fatal(err)
			}
			waitFor(t, "predicted fetches done", func() bool { st := l.Stats(); return st.InFlight == 0 && st.Predicting == 0 })
			if st := l.Stats(); st.ChunksPresent != tc.wantPresent {
				t.Errorf("%d chunks present, want %d", st.ChunksPresent, tc.wantPresent)
			}
		})
	}
}

// randomBytes is n bytes of rng.
func randomBytes(rng *rand.Rand, n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(rng.IntN(256))
	}
	return b
}
