package convert_test

import (
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/lazysnap/lazysnap/convert"
	"github.com/lazysnap/lazysnap/internal/testimage"
	"github.com/lazysnap/lazysnap/internal/testtar"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

func TestLayoutLayers(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "layout")
	l1, l2 := testtar.Synthetic(1<<10), testtar.Synthetic(2<<10)
	md, err := testimage.Layout(dir, "x", l1, l2)
	if err != nil {
		t.Fatal(err)
	}
	layers, err := convert.LayoutLayers(dir)
	if err != nil || len(layers) != 2 {
		t.Fatalf("LayoutLayers = %v, %v", layers, err)
	}
	for i, want := range [][]byte{l1, l2} {
		p, err := convert.LayoutBlobPath(dir, layers[i])
		if err != nil {
			t.Fatal(err)
		}
		fi, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Size() != layers[i].Size || layers[i].Size == 0 {
			t.Fatalf("layer %d at %s: %d bytes, descriptor %d (uncompressed %d)", i, p, fi.Size(), layers[i].Size, len(want))
		}
	}

	// a manifest that does not match its descriptor
	p, err := convert.LayoutBlobPath(dir, md)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(p)
	b[len(b)-2] ^= 1
	os.WriteFile(p, b, 0o644)
	if _, err := convert.LayoutLayers(dir); !errors.Is(err, convert.ErrLayout) {
		t.Fatalf("tampered manifest: %v, want ErrLayout", err)
	}
	if _, err := convert.LayoutLayers(t.TempDir()); !errors.Is(err, convert.ErrLayout) {
		t.Fatalf("empty directory: %v, want ErrLayout", err)
	}
}

func TestLayoutBlobPathRejectsBadDescriptors(t *testing.T) {
	for _, d := range []ocispec.Descriptor{
		{MediaType: ocispec.MediaTypeImageLayerGzip, Digest: "sha256:../../etc/passwd", Size: 1},
		{MediaType: ocispec.MediaTypeImageLayerGzip, Digest: "", Size: 1},
		{MediaType: ocispec.MediaTypeImageLayerGzip, Digest: "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855", Size: -1},
	} {
		if p, err := convert.LayoutBlobPath("/layout", d); !errors.Is(err, convert.ErrLayout) {
			t.Errorf("LayoutBlobPath(%v) = %q, %v; want ErrLayout", d, p, err)
		}
	}
}
