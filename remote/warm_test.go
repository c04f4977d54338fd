package remote

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/lazysnap/lazysnap/estargz"
	"github.com/lazysnap/lazysnap/fetcher"
	"github.com/lazysnap/lazysnap/internal/testenv"
	"github.com/lazysnap/lazysnap/internal/testenv/registry"
	"github.com/lazysnap/lazysnap/internal/testtar"
	"github.com/lazysnap/lazysnap/layer"
	"github.com/lazysnap/lazysnap/snapshotter"
	"github.com/opencontainers/go-digest"
	"github.com/opencontainers/image-spec/specs-go"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// pushLazyImage pushes an image of n eStargz layers, each holding the file
// "layer<i>", with the TOC digests annotated in the manifest as lazysnap
// convert writes them.
func pushLazyImage(t testing.TB, r *registry.Registry, repo string, n int) (ref string, layers []ocispec.Descriptor) {
	t.Helper()
	var ls []written
	for i := range n {
		tarb := testtar.Files([][2]string{{fmt.Sprintf("layer%d", i), strings.Repeat(fmt.Sprintf("content of layer %d\n", i), 100)}})
		ls = append(ls, write(t, estargz.Writer{}, tarb, layer.WriteOptions{}))
	}
	ref, layers, _ = pushLayers(t, r, repo, ls...)
	return ref, layers
}

// written is a layer as a format's writer wrote it.
type written struct {
	blob   []byte
	desc   ocispec.Descriptor // the layer's media type and annotations
	diffID digest.Digest
}

// write writes tarball as w does with opts.
func write(t testing.TB, w layer.Writer, tarball []byte, opts layer.WriteOptions) written {
	t.Helper()
	var blob bytes.Buffer
	res, err := w.Write(context.Background(), &blob, io.NewSectionReader(bytes.NewReader(tarball), 0, int64(len(tarball))), ocispec.Descriptor{}, opts)
	if err != nil {
		t.Fatal(err)
	}
	return written{blob.Bytes(), res.Desc, res.DiffID}
}

// pushLayers pushes repo:v1, a linux/amd64 image of ls, and returns its
// reference, its layers and its manifest's digest.
func pushLayers(t testing.TB, r *registry.Registry, repo string, ls ...written) (string, []ocispec.Descriptor, digest.Digest) {
	t.Helper()
	ctx := context.Background()
	p := r.Pusher()
	var layers []ocispec.Descriptor
	var diffIDs []digest.Digest
	for _, l := range ls {
		d, err := p.PushBlob(ctx, repo, l.blob)
		if err != nil {
			t.Fatal(err)
		}
		d.MediaType, d.Annotations = l.desc.MediaType, l.desc.Annotations
		layers, diffIDs = append(layers, d), append(diffIDs, l.diffID)
	}
	cb, _ := json.Marshal(ocispec.Image{Platform: ocispec.Platform{Architecture: "amd64", OS: "linux"}, RootFS: ocispec.RootFS{Type: "layers", DiffIDs: diffIDs}})
	cfg, err := p.PushBlob(ctx, repo, cb)
	if err != nil {
		t.Fatal(err)
	}
	cfg.MediaType = ocispec.MediaTypeImageConfig
	m, _ := json.Marshal(ocispec.Manifest{Versioned: specs.Versioned{SchemaVersion: 2}, MediaType: ocispec.MediaTypeImageManifest, Config: cfg, Layers: layers})
	md, err := p.PushManifest(ctx, repo, "v1", ocispec.MediaTypeImageManifest, m)
	if err != nil {
		t.Fatal(err)
	}
	return r.Ref(repo, "v1"), layers, md.Digest
}

// bigBlob is the blob of img's one layer, as the registry serves it.
func bigBlob(t *testing.T, r *registry.Registry, img registry.Image) []byte {
	t.Helper()
	repo := strings.TrimPrefix(strings.TrimSuffix(img.Ref, ":v1"), r.Host+"/")
	resp, err := http.Get(r.URL() + "/v2/" + repo + "/blobs/" + img.Layers[0].Digest.String())
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("GET blob: %s, %v", resp.Status, err)
	}
	return b
}

// layerLabels are the labels containerd's CRI plugin gives layer i of
// layers: its digest and TOC digest (an eStargz layer's), and the digests of it and the layers
// above it.
func layerLabels(ref string, layers []ocispec.Descriptor, i int) map[string]string {
	var above []string
	for _, l := range layers[i:] {
		above = append(above, l.Digest.String())
	}
	labels := map[string]string{
		snapshotter.LabelCRIImageRef:    ref,
		snapshotter.LabelCRILayerDigest: layers[i].Digest.String(),
		snapshotter.LabelCRIImageLayers: strings.Join(above, ","),
	}
	if toc, ok := layers[i].Annotations[estargz.TOCJSONDigestAnnotation]; ok {
		labels[snapshotter.LabelTOCDigest] = toc
	}
	return labels
}

// TestWarmNeighbours: mounting an image's first layer reads the tails and
// TOCs of the layers above it in the background, so that their Mounts send
// nothing to the registry; the files they serve are right; a warmed layer
// is verified against the TOC digest of its own Mount's labels; a TOC
// larger than the tail is read ahead too; and layers of images without
// TOC digest labels are not warmed.
func TestWarmNeighbours(t *testing.T) {
	testenv.NeedFUSE(t)
	r, hosts := startRegistry(t)
	newFS := func(t *testing.T) (*FS, *fetcher.Fetcher) {
		f, err := fetcher.New(fetcher.Config{HostsDir: hosts})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { f.Close() })
		rfs := New(NewRegistrySource(f), Options{Root: t.TempDir()})
		return rfs, f
	}
	mount := func(t *testing.T, rfs *FS, labels map[string]string) (string, error) {
		mp := t.TempDir()
		err := rfs.Mount(context.Background(), mp, labels)
		if err == nil {
			t.Cleanup(func() { rfs.Unmount(context.Background(), mp) })
		}
		return mp, err
	}
	waitWarm := func(rfs *FS) {
		rfs.warm.mu.Lock()
		var pending []*warmLayer
		for _, wl := range rfs.warm.m {
			pending = append(pending, wl)
		}
		rfs.warm.mu.Unlock()
		for _, wl := range pending {
			<-wl.done
		}
		for !lookedUp(rfs) { // the image configuration's lookup (start.go)
			time.Sleep(time.Millisecond)
		}
	}

	t.Run("layers above the first mount without requests", func(t *testing.T) {
		ref, layers := pushLazyImage(t, r, "warm/four", 4)
		rfs, f := newFS(t)
		requests := func() int64 { return f.Stats()[r.Host].Requests }
		if _, err := mount(t, rfs, layerLabels(ref, layers, 0)); err != nil {
			t.Fatal(err)
		}
		waitWarm(rfs)
		// the tails of the first layer and of the three warmed ones (their
		// TOCs fit in the tails); the image configuration (start.go: HEAD
		// and GET of the manifest, GET of the config)
		if got, want := requests(), int64(1+3+3); got != want {
			t.Errorf("first mount and warming took %d requests, want %d", got, want)
		}
		before := requests()
		var mps []string
		for i := 1; i < len(layers); i++ {
			mp, err := mount(t, rfs, layerLabels(ref, layers, i))
			if err != nil {
				t.Fatal(err)
			}
			mps = append(mps, mp)
		}
		if got := requests() - before; got != 0 {
			t.Errorf("mounting the warmed layers took %d requests, want 0", got)
		}
		for i, mp := range mps {
			b, err := os.ReadFile(filepath.Join(mp, fmt.Sprintf("layer%d", i+1)))
			if want := strings.Repeat(fmt.Sprintf("content of layer %d\n", i+1), 100); err != nil || string(b) != want {
				t.Errorf("layer %d serves %q, %v", i+1, b, err)
			}
		}
		if rfs.warm.mu.Lock(); len(rfs.warm.m) != 0 {
			t.Errorf("warm entries left after every layer mounted: %d", len(rfs.warm.m))
		}
		rfs.warm.mu.Unlock()
	})

	t.Run("TOC larger than the tail read ahead", func(t *testing.T) {
		ref, layers := pushLazyImage(t, r, "warm/big", 1)
		big, _, toc, _ := pushSmallFiles(t, r, hosts, 5000) // a TOC of about 150 KiB compressed
		d := big.Layers[0]
		d.Annotations = map[string]string{estargz.TOCJSONDigestAnnotation: toc.String()}
		// the big layer's blob is in another repository: copy it over
		if _, err := r.Pusher().PushBlob(context.Background(), "warm/big", bigBlob(t, r, big)); err != nil {
			t.Fatal(err)
		}
		layers = append(layers, d)
		rfs, f := newFS(t)
		requests := func() int64 { return f.Stats()[r.Host].Requests }
		if _, err := mount(t, rfs, layerLabels(ref, layers, 0)); err != nil {
			t.Fatal(err)
		}
		waitWarm(rfs)
		if got, want := requests(), int64(1+2+3); got != want {
			t.Errorf("first mount and warming took %d requests, want %d (tail; tail and rest of the TOC; the image configuration)", got, want)
		}
		rfs.warm.mu.Lock()
		tb, _ := rfs.warm.m[d.Digest].b.(*tailBlob)
		rfs.warm.mu.Unlock()
		if tb == nil || len(tb.Tail()) <= mountTailSize {
			t.Fatalf("warmed blob %T does not hold the whole TOC", tb)
		}
		before := requests()
		mp, err := mount(t, rfs, layerLabels(ref, layers, 1))
		if err != nil {
			t.Fatal(err)
		}
		// once open, the TOC's bytes are not kept for the life of the mount
		if n := len(tb.Tail()); n != mountTailSize {
			t.Errorf("mounted layer keeps a tail of %d bytes, want %d", n, mountTailSize)
		}
		if got := requests() - before; got != 0 {
			t.Errorf("mounting the warmed layer took %d requests, want 0", got)
		}
		if b, err := os.ReadFile(filepath.Join(mp, "d07/f04957")); err != nil || string(b) != "content of file 4957\n" {
			t.Errorf("big layer serves %q, %v", b, err)
		}
	})

	t.Run("no TOC digest labels: the manifest says lazy", func(t *testing.T) {
		// (zstd:chunked's annotations are never labels.) The first Mount
		// reads the manifest, then warms the layers above; the next Mount
		// finds its descriptor in the manifest read and its blob warmed
		ref, layers := pushLazyImage(t, r, "warm/unlabelled", 2)
		rfs, f := newFS(t)
		labels := layerLabels(ref, layers, 0)
		delete(labels, snapshotter.LabelTOCDigest)
		if _, err := mount(t, rfs, labels); err != nil {
			t.Fatal(err)
		}
		waitWarm(rfs)
		if got := f.Stats()[r.Host].Requests; got != 6 {
			t.Errorf("mount took %d requests, want 6 (HEAD and GET of the manifest, tail, the warmed layer's tail; HEAD of the manifest again and GET of the config)", got)
		}
		labels = layerLabels(ref, layers, 1)
		delete(labels, snapshotter.LabelTOCDigest)
		if _, err := mount(t, rfs, labels); err != nil {
			t.Fatal(err)
		}
		if got := f.Stats()[r.Host].Requests; got != 6 {
			t.Errorf("mounting the second layer took %d requests, want 0", got-6)
		}
	})

	t.Run("warmed TOC not matching the labels is not used", func(t *testing.T) {
		ref, layers := pushLazyImage(t, r, "warm/two", 2)
		rfs, _ := newFS(t)
		if _, err := mount(t, rfs, layerLabels(ref, layers, 0)); err != nil {
			t.Fatal(err)
		}
		waitWarm(rfs)
		labels := layerLabels(ref, layers, 1)
		labels[snapshotter.LabelTOCDigest] = digest.FromString("another TOC").String()
		_, err := mount(t, rfs, labels)
		var reason snapshotter.Reason
		if !errors.As(err, &reason) || reason != snapshotter.ReasonVerification {
			t.Fatalf("mount with a TOC digest the blob does not have: %v, want a verification failure", err)
		}
	})
}

// BenchmarkMountImageWAN mounts the 8 layers of an image one after
// another, as containerd prepares them, through a link adding 20 ms per
// request, with and without the warmer; fresh state every iteration.
//
//	go test ./cmd/lazysnap -run '^$' -bench MountImageWAN -benchtime 5x
func BenchmarkMountImageWAN(b *testing.B) {
	testenv.NeedFUSE(b)
	r := registry.Start(b, registry.Options{})
	wan := registry.StartWANProxy(b, r.URL(), registry.WANOptions{RTT: 20 * time.Millisecond})
	hosts := b.TempDir()
	if _, err := registry.WriteHostsConfig(hosts, wan.Host, registry.Endpoint{URL: wan.URL}); err != nil {
		b.Fatal(err)
	}
	_, layers := pushLazyImage(b, r, "warm/eight", 8)
	ref := wan.Host + "/warm/eight:v1"
	for _, warm := range []bool{false, true} {
		b.Run(map[bool]string{false: "one-by-one", true: "warmed"}[warm], func(b *testing.B) {
			b.ReportAllocs()
			for range b.N {
				f, err := fetcher.New(fetcher.Config{HostsDir: hosts})
				if err != nil {
					b.Fatal(err)
				}
				rfs := New(NewRegistrySource(f), Options{Root: b.TempDir()})
				if !warm {
					rfs.warm = nil
				}
				var mps []string
				for i := range layers {
					mp := b.TempDir()
					if err := rfs.Mount(context.Background(), mp, layerLabels(ref, layers, i)); err != nil {
						b.Fatal(err)
					}
					mps = append(mps, mp)
				}
				b.StopTimer()
				for _, mp := range mps {
					rfs.Unmount(context.Background(), mp)
				}
				f.Close()
				b.StartTimer()
			}
		})
	}
}
