package remote

import (
	"bytes"
	"compress/gzip"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/lazysnap/lazysnap/internal/testtar"
	"github.com/lazysnap/lazysnap/snapshotter"
	"github.com/opencontainers/go-digest"
)

// TestPullThenLazy: a gzip layer without any index is pulled at line rate
// into a directory (every file, its diff ID), in parts over several
// requests; the zTOC built on the way is kept, and the next Mount of the
// layer is lazy through it (format "soci (local zTOC)"), with no SOCI
// index in the registry; a local zTOC that was tampered with is refused.
func TestPullThenLazy(t *testing.T) {
	r, f := startFUSERegistry(t)
	ctx := context.Background()
	tarb := testtar.Synthetic(3 << 20)
	blob := gzipped(tarb)
	img, err := r.PushImage(ctx, "pull/plain", "v1", blob)
	if err != nil {
		t.Fatal(err)
	}
	layer := img.Layers[0].Digest
	root := t.TempDir()
	fs := New(NewRegistrySource(f), Options{Root: root, Pull: PullOptions{Connections: 3, PartSize: 256 << 10}})

	// not lazy: the image has no index of any kind
	if err := fs.Mount(ctx, t.TempDir(), sociLabels(img.Ref, layer)); err == nil || !strings.Contains(err.Error(), "no lazily loadable format") {
		t.Fatalf("Mount of an unindexed layer: %v, want not lazy", err)
	}
	dir := t.TempDir()
	res, err := fs.Pull(ctx, snapshotter.PullRequest{Dir: dir, Labels: sociLabels(img.Ref, layer)})
	if err != nil {
		t.Fatal(err)
	}
	if res.DiffID != digest.FromBytes(tarb) || res.Bytes != int64(len(blob)) {
		t.Fatalf("pull result %+v, want diff ID %s and %d bytes", res, digest.FromBytes(tarb), len(blob))
	}
	ents, _ := testtar.Read(tarb)
	for _, name := range []string{"big", "usr/bin/tool", "etc/hostname"} {
		if got, err := os.ReadFile(filepath.Join(dir, name)); err != nil || !bytes.Equal(got, ents[name].Content) {
			t.Fatalf("pulled %s: %v", name, err)
		}
	}
	ps := fs.Pulls()
	if len(ps) != 1 || ps[0].Err != "" || ps[0].Ztoc != "kept" || ps[0].Fetched != int64(len(blob)) || !strings.Contains(ps[0].NotLazy, "no lazily loadable format") {
		t.Fatalf("Pulls = %+v", ps)
	}

	// the next mount is lazy, through the zTOC the pull kept
	mp := t.TempDir()
	if err := fs.Mount(ctx, mp, sociLabels(img.Ref, layer)); err != nil {
		t.Fatalf("Mount after the pull: %v", err)
	}
	t.Cleanup(func() { fs.Unmount(ctx, mp) })
	if ls := fs.Layers(); len(ls) != 1 || ls[0].Format != "soci (local zTOC)" {
		t.Fatalf("layers %+v, want one of format soci (local zTOC)", ls)
	}
	for _, name := range []string{"big", "usr/bin/tool", "many/file-007"} {
		if got, err := os.ReadFile(filepath.Join(mp, name)); err != nil || !bytes.Equal(got, ents[name].Content) {
			t.Fatalf("lazy %s: %v", name, err)
		}
	}

	// a damaged local zTOC is refused at Mount
	fs2 := New(NewRegistrySource(f), Options{Root: root})
	raw, err := os.ReadFile(fs.ztocPath(layer))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(fs.ztocPath(layer), raw[:len(raw)/2], 0o600); err != nil {
		t.Fatal(err)
	}
	if err := fs2.Mount(ctx, t.TempDir(), sociLabels(img.Ref, layer)); err == nil {
		t.Fatal("a truncated local zTOC mounted")
	}

	// an image of three layers: the Pull of the first downloads the
	// two above ahead (they are not lazy either), and theirs unpack from
	// those spools
	var blobs [][]byte
	var tars [][]byte
	for i := range 3 {
		tb := testtar.Files([][2]string{{fmt.Sprintf("layer%d", i), strings.Repeat(fmt.Sprint(i), 300<<10)}})
		var b bytes.Buffer
		zw := gzip.NewWriter(&b)
		zw.Write(tb)
		zw.Close()
		tars, blobs = append(tars, tb), append(blobs, b.Bytes())
	}
	img3, err := r.PushImage(ctx, "pull/three", "v1", blobs...)
	if err != nil {
		t.Fatal(err)
	}
	fs3 := New(NewRegistrySource(f), Options{Root: t.TempDir()})
	for i := range img3.Layers {
		labels := layerLabels(img3.Ref, img3.Layers, i)
		d := t.TempDir()
		res, err := fs3.Pull(ctx, snapshotter.PullRequest{Dir: d, Labels: labels})
		if err != nil || res.DiffID != digest.FromBytes(tars[i]) {
			t.Fatalf("pull of layer %d: %v, %+v", i, err, res)
		}
		if got, err := os.ReadFile(filepath.Join(d, fmt.Sprintf("layer%d", i))); err != nil || len(got) != 300<<10 {
			t.Fatalf("layer %d's file: %v", i, err)
		}
		if i == 0 {
			if !fs3.spools.has(img3.Layers[1].Digest) || !fs3.spools.has(img3.Layers[2].Digest) {
				t.Fatal("the layers above the first were not spooled")
			}
			// downloaded, not taken yet: the budget is free again
			for _, l := range img3.Layers[1:] {
				fs3.spools.mu.Lock()
				sp := fs3.spools.m[l.Digest]
				fs3.spools.mu.Unlock()
				sp.mu.Lock()
				more, done := sp.more, sp.done
				sp.mu.Unlock()
				for !done {
					<-more
					sp.mu.Lock()
					more, done = sp.more, sp.done
					sp.mu.Unlock()
				}
			}
			if n := len(fs3.pullSlots); n != 0 {
				t.Fatalf("%d slots of the pull budget held by finished downloads", n)
			}
		}
	}
	for _, p := range fs3.Pulls() {
		if want := p.Digest != img3.Layers[0].Digest; p.Spooled != want {
			t.Errorf("pull of %s: spooled %v, want %v", p.Digest, p.Spooled, want)
		}
	}
	if ents, _ := os.ReadDir(filepath.Join(fs3.opts.Root, spoolDir)); len(ents) != 0 {
		t.Errorf("spools left after their pulls: %v", ents)
	}
	fs3.Close()

	// a layer the image does not list is not pulled
	_, err = fs.Pull(ctx, snapshotter.PullRequest{Dir: t.TempDir(), Labels: sociLabels(img.Ref, digest.FromString("not this blob"))})
	if err == nil || !strings.Contains(err.Error(), "is not in") {
		t.Fatalf("pull of a layer not in the image: %v", err)
	}
}
