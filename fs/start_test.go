package fs_test

import (
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
		// interpreter, ld.so.cache, libfoo's first chunk and the one of its
		// dynamic section, libbar, libbaz
		{name: "on the PATH", paths: []string{"/usr/local/bin/prog", "/usr/bin/prog"}, want: "/usr/bin/prog", wantPresent: 10, wantRequests: 5, replay: true},
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
