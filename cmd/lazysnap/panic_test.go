package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/lazysnap/lazysnap/estargz"
	"github.com/lazysnap/lazysnap/fs/fetch"
	"github.com/lazysnap/lazysnap/fusemanager"
	"github.com/lazysnap/lazysnap/internal/testenv"
	"github.com/lazysnap/lazysnap/internal/testtar"
	"github.com/lazysnap/lazysnap/ops"
	"github.com/lazysnap/lazysnap/remote"
	"github.com/lazysnap/lazysnap/snapshotter"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// memorySource serves eStargz layers from memory, by digest.
type memorySource map[digest.Digest][]byte

func (s memorySource) Layer(ctx context.Context, ref string, dg digest.Digest) (ocispec.Descriptor, error) {
	return ocispec.Descriptor{}, errors.New("memory source: no manifests")
}

func (s memorySource) Blob(ctx context.Context, ref string, desc ocispec.Descriptor) (remote.Blob, error) {
	b, ok := s[desc.Digest]
	if !ok {
		return nil, fmt.Errorf("memory source: no blob %s", desc.Digest)
	}
	return memoryBlob{bytes.NewReader(b)}, nil
}

type memoryBlob struct{ *bytes.Reader }

func (b memoryBlob) ReadRange(ctx context.Context, off, n int64) ([]byte, error) {
	p := make([]byte, n)
	_, err := b.ReadAt(p, off)
	return p, err
}

// TestPanicStatusThroughManager: a fuse manager (its protocol, served
// over its socket) whose layer panics while serving a read answers that
// read EIO, keeps serving its other layer, and `lazysnap status` shows the
// layer bad with the panic and where it happened.
func TestPanicStatusThroughManager(t *testing.T) {
	testenv.NeedFUSE(t)
	src := memorySource{}
	var layers []ocispec.Descriptor
	for i := range 2 {
		tarb := testtar.Files([][2]string{{fmt.Sprintf("layer%d", i), fmt.Sprintf("content of layer %d\n", i)}})
		var blob bytes.Buffer
		res, err := estargz.Convert(context.Background(), &blob, io.NewSectionReader(bytes.NewReader(tarb), 0, int64(len(tarb))))
		if err != nil {
			t.Fatal(err)
		}
		d := digest.FromBytes(blob.Bytes())
		src[d] = blob.Bytes()
		layers = append(layers, ocispec.Descriptor{Digest: d, Annotations: map[string]string{estargz.TOCJSONDigestAnnotation: res.TOCDigest.String()}})
	}
	var panicked atomic.Bool
	m := newTestManagerWith(t, src, remote.Options{Layer: fetch.Options{NoPrefetch: true, NoBackground: true,
		// the first read that waits for a fetch panics on its way out
		OnReadLatency: func(time.Duration) {
			if panicked.CompareAndSwap(false, true) {
				panic("latency bug")
			}
		}}})
	m.serve(t)
	client := fusemanager.NewClient(m.sock)
	fs := fusemanager.NewFS(client, nil)
	ctx := context.Background()
	mps := make([]string, len(layers))
	for i, l := range layers {
		mps[i] = t.TempDir()
		labels := map[string]string{snapshotter.LabelCRIImageRef: "reg.example/app:1", snapshotter.LabelCRILayerDigest: l.Digest.String(),
			snapshotter.LabelTOCDigest: l.Annotations[estargz.TOCJSONDigestAnnotation]}
		if err := fs.Mount(ctx, mps[i], labels); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { fs.Unmount(ctx, mps[i]) })
	}
	if _, err := os.ReadFile(filepath.Join(mps[0], "layer0")); !errors.Is(err, syscall.EIO) {
		t.Fatalf("read of the panicking layer: %v, want EIO", err)
	}
	if got, err := os.ReadFile(filepath.Join(mps[1], "layer1")); err != nil || string(got) != "content of layer 1\n" {
		t.Fatalf("read of the other layer: %q, %v", got, err)
	}
	rep, err := client.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	if err := ops.WriteText(&out, rep); err != nil {
		t.Fatal(err)
	}
	const reason = "bad: panic: latency bug at lazysnap.TestPanicStatusThroughManager"
	if n := strings.Count(out.String(), reason); n != 1 {
		t.Fatalf("lazysnap status shows %q for %d layers, want 1:\n%s", reason, n, out.String())
	}
	if len(rep.BadLayers) != 1 || rep.BadLayers[0].Digest != layers[0].Digest.String() || !strings.HasPrefix("bad: "+rep.BadLayers[0].Reason, reason) {
		t.Fatalf("bad layers %+v, want layer 0 for %q", rep.BadLayers, reason)
	}
	t.Logf("lazysnap status:\n%s", out.String())
}
