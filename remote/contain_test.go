package remote

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/lazysnap/lazysnap/estargz"
	"github.com/lazysnap/lazysnap/fetcher"
	"github.com/lazysnap/lazysnap/fs/fetch"
	"github.com/lazysnap/lazysnap/internal/testenv"
	"github.com/lazysnap/lazysnap/snapshotter"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// TestPanicMarksLayerBad: a panic while one mounted layer is served
// (here in its first read's FUSE request) fails that read with EIO and
// marks the layer bad as verification does, with the panic as the
// reason: in its LayerInfo (with verification off too), in BadLayers,
// and new Mounts of it are refused (the snapshotter pulls it the ordinary
// way). The other layer of the image keeps serving.
func TestPanicMarksLayerBad(t *testing.T) {
	testenv.NeedFUSE(t)
	r, hosts := startRegistry(t)
	ref, layers := pushLazyImage(t, r, "panic/two", 2)
	f, err := fetcher.New(fetcher.Config{HostsDir: hosts})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	var panicked atomic.Bool
	rfs := New(NewRegistrySource(f), Options{Root: t.TempDir(), Layer: fetch.Options{NoPrefetch: true, NoBackground: true,
		// the first read that waits for a fetch panics on its way out
		OnReadLatency: func(time.Duration) {
			if panicked.CompareAndSwap(false, true) {
				panic("latency bug")
			}
		}}})
	mps := make([]string, len(layers))
	for i := range layers {
		mps[i] = t.TempDir()
		if err := rfs.Mount(context.Background(), mps[i], layerLabels(ref, layers, i)); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { rfs.Unmount(context.Background(), mps[i]) })
	}
	if _, err := os.ReadFile(filepath.Join(mps[0], "layer0")); !errors.Is(err, syscall.EIO) {
		t.Fatalf("read of the panicking layer: %v, want EIO", err)
	}
	got, err := os.ReadFile(filepath.Join(mps[1], "layer1"))
	if want := strings.Repeat("content of layer 1\n", 100); err != nil || string(got) != want {
		t.Fatalf("read of the other layer: %q, %v", got, err)
	}
	const reason = "panic: latency bug at remote.TestPanicMarksLayerBad"
	for _, li := range rfs.Layers() {
		bad := li.Mountpoint == mps[0]
		if got := strings.HasPrefix(li.Verification, verifyBadPrefix+reason); got != bad || bad != strings.HasPrefix(li.LastError, reason) {
			t.Errorf("layer %s: verification %q, last error %q; want bad with %q: %v", li.Mountpoint, li.Verification, li.LastError, reason, bad)
		}
	}
	toc := layers[0].Annotations[estargz.TOCJSONDigestAnnotation]
	if bl := rfs.BadLayers(); len(bl) != 1 || bl[0].Digest != layers[0].Digest || bl[0].Index.String() != toc || !strings.HasPrefix(bl[0].Reason, reason) {
		t.Fatalf("bad layers: %+v, want layer 0 with its TOC, for %q", bl, reason)
	}
	if err := rfs.Mount(context.Background(), t.TempDir(), layerLabels(ref, layers, 0)); !errors.Is(err, snapshotter.ReasonVerification) || !strings.Contains(err.Error(), reason) {
		t.Fatalf("new Mount of the bad layer: %v, want refused as verification, with the panic", err)
	}
	if _, err := os.ReadFile(filepath.Join(mps[0], "layer0")); !errors.Is(err, syscall.EIO) {
		t.Fatalf("second read of the bad layer: %v, want EIO", err)
	}
	if got, err := os.ReadFile(filepath.Join(mps[1], "layer1")); err != nil || !bytes.Contains(got, []byte("layer 1")) {
		t.Fatalf("second read of the other layer: %v", err)
	}
}

// panicSource is a Source whose code panics: Blob itself for layer
// blobPanics, and the reads of every other layer's blob.
type panicSource struct{ blobPanics digest.Digest }

func (s panicSource) Layer(ctx context.Context, ref string, dg digest.Digest) (ocispec.Descriptor, error) {
	return ocispec.Descriptor{}, errors.New("no manifest")
}

func (s panicSource) Blob(ctx context.Context, ref string, desc ocispec.Descriptor) (Blob, error) {
	if desc.Digest == s.blobPanics {
		panic("blob bug")
	}
	return panicBlob{}, nil
}

type panicBlob struct{}

func (panicBlob) ReadRange(ctx context.Context, off, n int64) ([]byte, error) { panic("read bug") }
func (panicBlob) ReadAt(p []byte, off int64) (int, error)                     { panic("read bug") }
func (panicBlob) Size() int64                                                 { return 1 << 20 }

// TestPanicInMountFallsBack: a panic while a Mount opens its layer (the
// index read from the blob), or while the warmer reads a layer ahead, is
// contained: the Mount fails as not lazy with the panic as the reason (the
// snapshotter pulls the layer the ordinary way), and the process goes on.
func TestPanicInMountFallsBack(t *testing.T) {
	layers := []ocispec.Descriptor{
		{Digest: digest.FromString("layer 0"), Annotations: map[string]string{estargz.TOCJSONDigestAnnotation: digest.FromString("toc 0").String()}},
		{Digest: digest.FromString("layer 1"), Annotations: map[string]string{estargz.TOCJSONDigestAnnotation: digest.FromString("toc 1").String()}},
	}
	// mounting layer 0 warms layer 1, whose Blob panics in the warmer
	rfs := New(panicSource{blobPanics: layers[1].Digest}, Options{Root: t.TempDir()})
	for i, want := range []string{"panic: read bug at remote.panicBlob.", "panic: blob bug at remote.panicSource.Blob"} {
		err := rfs.Mount(context.Background(), t.TempDir(), layerLabels("reg.example/app:1", layers, i))
		if !errors.Is(err, snapshotter.ReasonNotLazy) || !errors.Is(err, fetch.ErrPanic) || !strings.Contains(err.Error(), want) {
			t.Errorf("Mount of layer %d: %v, want not lazy: %q", i, err, want)
		}
	}
	if n := len(rfs.Layers()); n != 0 {
		t.Fatalf("%d layers mounted", n)
	}
}
