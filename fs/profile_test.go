package fs_test

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/lazysnap/lazysnap/estargz"
	"github.com/lazysnap/lazysnap/fs/fetch"
	"github.com/lazysnap/lazysnap/index"
	"github.com/lazysnap/lazysnap/internal/testtar"
)

// TestChunkAccessAndPrefetchChunks: OnChunkAccess reports each chunk once,
// the first time a reader needs it, in first-access order; PrefetchChunks
// of those chunks on a fresh layer over the same blob fetches them in one
// request (they lie close together), after which reading them fetches
// nothing.
func TestChunkAccessAndPrefetchChunks(t *testing.T) {
	var files [][2]string
	for i := range 20 {
		files = append(files, [2]string{fmt.Sprintf("f%02d", i), strings.Repeat(fmt.Sprintf("file %d\n", i), 3000)})
	}
	tarball := testtar.Files(files)
	newLayer := func(opts fetch.Options) (*fetch.Layer, *memBlob, *index.Index) {
		opts.NoPrefetch, opts.NoBackground = true, true
		return layerIndexed(t, tarball, opts, func(b *memBlob) fetch.BlobReader { return b }, estargz.WithChunkSize(8<<10))
	}
	var (
		mu  sync.Mutex
		got []fetch.ChunkRef
	)
	l, _, x := newLayer(fetch.Options{OnChunkAccess: func(ino index.Ino, chunk int) {
		mu.Lock()
		got = append(got, fetch.ChunkRef{Ino: ino, Chunk: chunk})
		mu.Unlock()
	}})
	mnt, _ := mount(t, l)
	order := []string{"f07", "f02", "f07", "f11"}
	var want []fetch.ChunkRef
	seen := map[string]bool{}
	for _, name := range order {
		if _, err := os.ReadFile(filepath.Join(mnt, name)); err != nil {
			t.Fatal(err)
		}
		if seen[name] {
			continue
		}
		seen[name] = true
		ino, _ := x.LookupPath(name)
		for i := range x.NumChunks(ino) {
			want = append(want, fetch.ChunkRef{Ino: ino, Chunk: i})
		}
	}
	mu.Lock()
	if !slices.Equal(got, want) {
		t.Fatalf("accessed chunks %v, want %v", got, want)
	}
	mu.Unlock()

	l2, blob2, _ := newLayer(fetch.Options{})
	<-l2.PrefetchChunks(want)
	if n := blob2.requests.Load(); n != 1 {
		t.Fatalf("PrefetchChunks of %d chunks made %d requests, want 1", len(want), n)
	}
	if st := l2.Stats(); st.ChunksPresent != len(want) {
		t.Fatalf("%d chunks present after PrefetchChunks, want %d", st.ChunksPresent, len(want))
	}
	mnt2, _ := mount(t, l2)
	for _, name := range order {
		b, err := os.ReadFile(filepath.Join(mnt2, name))
		if err != nil || !bytes.Contains(b, []byte("file")) {
			t.Fatalf("%s: %v", name, err)
		}
	}
	if n := blob2.requests.Load(); n != 1 {
		t.Fatalf("reading the prefetched files made %d more requests", n-1)
	}
}
