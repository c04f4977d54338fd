package remote

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/lazysnap/lazysnap/fetcher"
	"github.com/lazysnap/lazysnap/fs/fetch"
	"github.com/lazysnap/lazysnap/internal/testenv"
	"github.com/lazysnap/lazysnap/internal/testtar"
	"github.com/lazysnap/lazysnap/snapshotter"
	"github.com/lazysnap/lazysnap/soci"
	"github.com/opencontainers/go-digest"
)

func sociLabels(ref string, layer digest.Digest) map[string]string {
	return map[string]string{snapshotter.LabelCRIImageRef: ref, snapshotter.LabelCRILayerDigest: layer.String()}
}

// TestSociMount: a gzip layer whose image has a SOCI v2 index mounts
// lazily (format soci); every file reads back right, small files of one
// span costing one request; a layer whose zTOC names a wrong span digest
// serves EIO for the files of that span, with the reason reported, and
// the right bytes for the others; a layer without a zTOC falls back with
// the reason.
func TestSociMount(t *testing.T) {
	r, f := startFUSERegistry(t)
	ctx := context.Background()
	blob, files := testtar.SociLayer(1)
	var mu sync.Mutex
	var errs []error
	newFS := func(t *testing.T) *FS {
		return New(NewRegistrySource(f), Options{Root: t.TempDir(), OnError: func(_ digest.Digest, err error) {
			mu.Lock()
			errs = append(errs, err)
			mu.Unlock()
		}})
	}
	mount := func(t *testing.T, fs *FS, ref string, layer digest.Digest) (string, error) {
		mp := t.TempDir()
		err := fs.Mount(ctx, mp, sociLabels(ref, layer))
		if err == nil {
			t.Cleanup(func() { fs.Unmount(ctx, mp) })
		}
		return mp, err
	}

	// mountTampered pushes the layer with a zTOC tamper changed, and
	// mounts it
	mountTampered := func(t *testing.T, repo string, tamper func(z *soci.Ztoc)) (*FS, string, *soci.Ztoc) {
		img, err := r.Pusher().PushSociImage(ctx, r.Host, repo, "v1", 64<<10, func(_ int, z *soci.Ztoc) { tamper(z) }, blob)
		if err != nil {
			t.Fatal(err)
		}
		fs := newFS(t)
		mp, err := mount(t, fs, img.Ref, img.Layers[0].Digest)
		if err != nil {
			t.Fatal(err)
		}
		return fs, mp, img.Ztocs[0]
	}

	t.Run("reads", func(t *testing.T) {
		img, err := r.Pusher().PushSociImage(ctx, r.Host, "soci/good", "v1", 64<<10, nil, blob)
		if err != nil {
			t.Fatal(err)
		}
		if n := len(img.Ztocs[0].SpanDigests); n < 10 {
			t.Fatalf("%d spans; the test wants many", n)
		}
		fs := newFS(t)
		mp, err := mount(t, fs, img.Ref, img.Layers[0].Digest)
		if err != nil {
			t.Fatal(err)
		}
		if ls := fs.Layers(); len(ls) != 1 || ls[0].Format != "soci" {
			t.Fatalf("layers %+v, want one of format soci", ls)
		}
		for name, want := range files {
			got, err := os.ReadFile(filepath.Join(mp, name))
			if err != nil {
				t.Fatal(err)
			}
			if string(got) != want {
				t.Fatalf("%s: %d bytes that differ from the %d in the layer", name, len(got), len(want))
			}
		}
		st := fs.Layers()[0].Stats
		if st.FetchedBytes > int64(len(blob))+int64(len(blob))/4 {
			t.Fatalf("fetched %d bytes of a %d-byte layer", st.FetchedBytes, len(blob))
		}
		if st.Requests > int64(len(img.Ztocs[0].SpanDigests))+2 {
			t.Fatalf("%d requests for %d spans", st.Requests, len(img.Ztocs[0].SpanDigests))
		}
	})

	// mountQuiet pushes the layer to repo and mounts it with neither
	// prefetch nor background fetch
	mountQuiet := func(t *testing.T, repo string) (*FS, string) {
		img, err := r.Pusher().PushSociImage(ctx, r.Host, repo, "v1", 64<<10, nil, blob)
		if err != nil {
			t.Fatal(err)
		}
		fs := New(NewRegistrySource(f), Options{Root: t.TempDir(), Layer: fetch.Options{NoBackground: true, NoPrefetch: true}})
		mp, err := mount(t, fs, img.Ref, img.Layers[0].Digest)
		if err != nil {
			t.Fatal(err)
		}
		return fs, mp
	}

	// settled returns the stats of fs's layer once no fetch is in flight
	settled := func(fs *FS) fetch.Stats {
		st := fs.Layers()[0].Stats
		for deadline := time.Now().Add(30 * time.Second); (st.InFlight > 0 || st.Predicting > 0) && time.Now().Before(deadline); st = fs.Layers()[0].Stats {
			time.Sleep(10 * time.Millisecond)
		}
		return st
	}

	t.Run("one read stores its span", func(t *testing.T) {
		fs, mp := mountQuiet(t, "soci/span")
		if got, err := os.ReadFile(filepath.Join(mp, "usr/lib/small05")); err != nil || string(got) != files["usr/lib/small05"] {
			t.Fatalf("usr/lib/small05: %v", err)
		}
		// the reader's chunk is served first; the span's others are stored
		// after, by the same fetch
		st := fs.Layers()[0].Stats
		for deadline := time.Now().Add(30 * time.Second); st.InFlight > 0 && time.Now().Before(deadline); st = fs.Layers()[0].Stats {
			time.Sleep(10 * time.Millisecond)
		}
		if st.Requests != 1 || st.ChunksPresent < 5 || st.ReadAroundChunks != int64(st.ChunksPresent-1) || st.ReadAroundBytes != 0 {
			t.Fatalf("after one small file: %d requests, %d chunks present, %d read around in %d bytes; want 1 request storing the span's other files at no byte cost",
				st.Requests, st.ChunksPresent, st.ReadAroundChunks, st.ReadAroundBytes)
		}
	})

	t.Run("an executable comes whole", func(t *testing.T) {
		fs, mp := mountQuiet(t, "soci/exec")
		exe, err := os.Open(filepath.Join(mp, "usr/bin/big")) // 400 KiB, mode 0755: several spans
		if err != nil {
			t.Fatal(err)
		}
		defer exe.Close()
		if _, err := exe.ReadAt(make([]byte, 4096), 0); err != nil {
			t.Fatal(err)
		}
		before := settled(fs).Requests
		got := make([]byte, 4096)
		if _, err := exe.ReadAt(got, 350<<10); err != nil {
			t.Fatal(err)
		}
		if string(got) != files["usr/bin/big"][350<<10:350<<10+4096] {
			t.Fatal("wrong bytes")
		}
		if n := settled(fs).Requests - before; n != 0 {
			t.Fatalf("a read near the end made %d requests after the first read of the start; want none (exec maps a program whole)", n)
		}
	})

	t.Run("a predicted span stores its other files", func(t *testing.T) {
		fs, mp := mountQuiet(t, "soci/predicted-span")
		read := func(name string, n int) {
			t.Helper()
			f, err := os.Open(filepath.Join(mp, name))
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			got := make([]byte, n)
			if _, err := f.ReadAt(got, 0); err != nil || string(got) != files[name][:n] {
				t.Fatalf("%s: %v", name, err)
			}
		}
		// usr/bin/big's last span holds the start of usr/share/text, whose
		// first read (present, an executable: the rest predicted) fetches
		// its last span, which holds etc/conf
		read("usr/bin/big", 4096)
		settled(fs)
		read("usr/share/text", 4096)
		before := settled(fs).Requests
		read("etc/conf", len(files["etc/conf"]))
		if n := settled(fs).Requests - before; n != 0 {
			t.Fatalf("etc/conf, in the last span of the predicted usr/share/text, made %d requests; want none", n)
		}
	})

	t.Run("tampered span", func(t *testing.T) {
		var bad int
		_, mp, z := mountTampered(t, "soci/bad", func(z *soci.Ztoc) {
			bad = z.SpanAt(z.Files[len(z.Files)-1].Offset) // the last file's span
			z.SpanDigests[bad] = digest.FromString("not the span")
		})
		for _, zf := range z.Files {
			got, err := os.ReadFile(filepath.Join(mp, zf.Name))
			// an open checks the span holding the file's header, a read
			// the spans of its bytes
			s, e := z.SpanAt(zf.Offset), z.SpanAt(zf.Offset+max(zf.Size-1, 0))
			if zf.Size > 0 && s <= bad && bad <= e || z.SpanAt(zf.Offset-1) == bad {
				if !errors.Is(err, syscall.EIO) {
					t.Fatalf("%s in the tampered span: %v, want EIO", zf.Name, err)
				}
				continue
			}
			if err != nil || string(got) != files[zf.Name] {
				t.Fatalf("%s outside the tampered span: %v", zf.Name, err)
			}
		}
		mu.Lock()
		defer mu.Unlock()
		if len(errs) == 0 || !errors.Is(errs[len(errs)-1], soci.ErrVerify) || !strings.Contains(errs[len(errs)-1].Error(), "the zTOC says") {
			t.Fatalf("reported errors %v, want a span verification failure", errs)
		}
	})

	t.Run("zTOC disagrees with the tar", func(t *testing.T) {
		var renamed, resized string
		fs, mp, _ := mountTampered(t, "soci/lies", func(z *soci.Ztoc) {
			for i := range z.Files {
				switch f := &z.Files[i]; {
				case f.Name == "usr/lib/small10":
					f.Name, renamed = "usr/lib/evil", "usr/lib/evil"
				case f.Name == "usr/lib/small20" && f.Size > 0:
					f.Size--
					resized = f.Name
				}
			}
		})
		for _, name := range []string{renamed, resized} {
			if _, err := os.ReadFile(filepath.Join(mp, name)); !errors.Is(err, syscall.EIO) {
				t.Fatalf("%s, which the zTOC misdescribes: %v, want EIO", name, err)
			}
			if e := fs.Layers()[0].LastError; !strings.Contains(e, "does not match the layer's tar header") {
				t.Fatalf("layer error %q, want the header mismatch", e)
			}
		}
	})

	t.Run("v1 index, referrers tag schema", func(t *testing.T) {
		img, err := r.Pusher().PushSociImageV1(ctx, r.Host, "soci/v1", "v1", 64<<10, blob)
		if err != nil {
			t.Fatal(err)
		}
		// off by default: the referrer is ignored, the layer falls back
		_, err = mount(t, newFS(t), img.Ref, img.Layers[0].Digest)
		if !errors.Is(err, snapshotter.ReasonNotLazy) || !strings.Contains(err.Error(), "v1 indexes are off") {
			t.Fatalf("Mount with only a v1 index, v1 off: %v, want not-lazy saying v1 indexes are off", err)
		}
		fs := New(NewRegistrySource(f, WithSociV1(true)), Options{Root: t.TempDir()})
		mp, err := mount(t, fs, img.Ref, img.Layers[0].Digest)
		if err != nil {
			t.Fatal(err)
		}
		if got, err := os.ReadFile(filepath.Join(mp, "usr/bin/big")); err != nil || string(got) != files["usr/bin/big"] {
			t.Fatalf("usr/bin/big through the v1 index: %v", err)
		}
	})

	t.Run("no zTOC", func(t *testing.T) {
		img, err := r.PushImage(ctx, "soci/none", "v1", blob)
		if err != nil {
			t.Fatal(err)
		}
		_, err = mount(t, newFS(t), img.Ref, img.Layers[0].Digest)
		if !errors.Is(err, snapshotter.ReasonNotLazy) || !strings.Contains(err.Error(), "no SOCI index") {
			t.Fatalf("Mount of a plain gzip layer: %v, want not-lazy naming the missing SOCI index", err)
		}
	})

	t.Run("zTOC of another blob", func(t *testing.T) {
		other, _ := testtar.SociLayer(2)
		img, err := r.Pusher().PushSociImage(ctx, r.Host, "soci/other", "v1", 64<<10, func(_ int, z *soci.Ztoc) {
			z.CompressedSize = int64(len(other)) + 1
		}, blob)
		if err != nil {
			t.Fatal(err)
		}
		_, err = mount(t, newFS(t), img.Ref, img.Layers[0].Digest)
		if !errors.Is(err, snapshotter.ReasonVerification) {
			t.Fatalf("Mount with a zTOC of another size: %v, want verification", err)
		}
	})
}

// TestSociPackedZtoc: a zTOC whose descriptor names a packed copy
// (soci.PackZtoc) is fetched packed, fewer bytes before the mount; a
// packed copy that is missing, or that unpacks into another zTOC, is
// passed over for the zTOC itself, and the layer mounts and reads right
// either way.
func TestSociPackedZtoc(t *testing.T) {
	testenv.NeedFUSE(t)
	r, hosts := startRegistry(t)
	ctx := context.Background()
	blob, files := testtar.SociLayer(3)
	other, _ := testtar.SociLayer(4)
	otherZ, err := soci.Build(bytes.NewReader(other), soci.BuildOptions{SpanSize: 64 << 10})
	if err != nil {
		t.Fatal(err)
	}
	otherPacked, err := soci.PackZtoc(soci.Marshal(otherZ), map[string]string{})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name       string
		pack       func(int, []byte) []byte
		wantPacked bool // fewer bytes than the zTOC's fetched
	}{
		{name: "packed", pack: func(_ int, b []byte) []byte { return b }, wantPacked: true},
		{name: "packed copy missing", pack: func(int, []byte) []byte { return nil }},
		{name: "packed copy of another zTOC", pack: func(int, []byte) []byte { return otherPacked }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := r.Pusher()
			p.Pack = tc.pack
			repo := "soci/packed-" + strings.ToLower(strings.ReplaceAll(tc.name, " ", "-"))
			img, err := p.PushSociImage(ctx, r.Host, repo, "v1", 64<<10, nil, blob)
			if err != nil {
				t.Fatal(err)
			}
			f, err := fetcher.New(fetcher.Config{HostsDir: hosts})
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			fs := New(NewRegistrySource(f), Options{Root: t.TempDir(), Layer: fetch.Options{NoBackground: true, NoPrefetch: true}})
			mp := t.TempDir()
			if err := fs.Mount(ctx, mp, sociLabels(img.Ref, img.Layers[0].Digest)); err != nil {
				t.Fatal(err)
			}
			defer fs.Unmount(ctx, mp)
			var mounted int64
			for _, h := range f.Stats() {
				mounted += h.Bytes
			}
			ztoc := img.Sizes[0].Size
			if packed := mounted < ztoc; packed != tc.wantPacked {
				t.Errorf("the mount fetched %d bytes, the zTOC is %d: packed %v, want %v", mounted, ztoc, packed, tc.wantPacked)
			}
			got, err := os.ReadFile(filepath.Join(mp, "usr/bin/big"))
			if err != nil || string(got) != files["usr/bin/big"] {
				t.Fatalf("usr/bin/big: %v", err)
			}
		})
	}
}
