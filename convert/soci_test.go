package convert_test

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"testing"

	"github.com/lazysnap/lazysnap/convert"
	"github.com/lazysnap/lazysnap/internal/testimage"
	"github.com/lazysnap/lazysnap/internal/testtar"
	"github.com/lazysnap/lazysnap/soci"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

func readLayoutJSON(t *testing.T, dir string, d ocispec.Descriptor, v any) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, "blobs", d.Digest.Algorithm().String(), d.Digest.Encoded()))
	if err != nil {
		t.Fatal(err)
	}
	if v != nil {
		if err := json.Unmarshal(b, v); err != nil {
			t.Fatal(err)
		}
	}
	return b
}

// TestIndexImage: a layout indexed into another has, as soci convert
// writes it, an image index of the image manifest (annotated with the
// SOCI index digest, same layers) and the SOCI index (artifact type v2,
// the platform, the manifest digest annotation), whose zTOCs follow the
// layers in order; the source layout is unchanged; indexing again in
// place replaces the SOCI index rather than adding one.
func TestIndexImage(t *testing.T) {
	var layers [][]byte
	for _, name := range []string{"a", "b"} {
		layers = append(layers, testtar.Files([][2]string{{"dir/" + name, "content of " + name}, {"big" + name, string(bytes.Repeat([]byte(name), 200000))}}))
	}
	src := filepath.Join(t.TempDir(), "src")
	if _, err := testimage.Layout(src, "lazysnap.test/soci:1", layers...); err != nil {
		t.Fatal(err)
	}
	before, _ := os.ReadFile(filepath.Join(src, "index.json"))
	dst := filepath.Join(t.TempDir(), "dst")
	rep, err := convert.IndexImage(context.Background(), src, dst, convert.IndexOptions{SpanSize: 64 << 10})
	if err != nil {
		t.Fatal(err)
	}
	if after, _ := os.ReadFile(filepath.Join(src, "index.json")); !bytes.Equal(before, after) {
		t.Fatal("the source layout changed")
	}
	if len(rep.Layers) != 2 || rep.Manifests != 1 {
		t.Fatalf("report: %d layers, %d manifests", len(rep.Layers), rep.Manifests)
	}
	check := func(t *testing.T, dir string) {
		var top ocispec.Index
		readLayoutJSON(t, dir, ocispec.Descriptor{Digest: rootDigest(t, dir)}, &top)
		if len(top.Manifests) != 2 || top.Manifests[1].ArtifactType != soci.ArtifactTypeV2 || top.Manifests[0].Platform == nil || top.Manifests[1].Platform == nil {
			t.Fatalf("image index: %+v", top.Manifests)
		}
		var m ocispec.Manifest
		readLayoutJSON(t, dir, top.Manifests[0], &m)
		if m.Annotations[soci.AnnotationIndexDigest] != top.Manifests[1].Digest.String() || top.Manifests[1].Annotations[soci.AnnotationManifestDigest] != top.Manifests[0].Digest.String() {
			t.Fatalf("manifest annotations %v, SOCI index entry %+v", m.Annotations, top.Manifests[1])
		}
		idx, err := soci.ParseIndexManifest(readLayoutJSON(t, dir, top.Manifests[1], nil))
		if err != nil || len(idx.Layers) != 2 {
			t.Fatalf("SOCI index: %v, %d zTOCs", err, len(idx.Layers))
		}
		for i, l := range m.Layers {
			zd, err := idx.Ztoc(l.Digest)
			if err != nil || idx.Layers[i].Digest != zd.Digest {
				t.Fatalf("layer %d: zTOC %v (%v), not in layer order", i, zd.Digest, err)
			}
			zb := readLayoutJSON(t, dir, ocispec.Descriptor{Digest: zd.Digest}, nil)
			z, err := soci.Unmarshal(zb, 0)
			if err != nil || z.CompressedSize != l.Size || len(z.Files) != 2 {
				t.Fatalf("layer %d: zTOC %v, %d entries", i, err, len(z.Files))
			}
			// and its packed copy, beside it
			pd, psize, ok := soci.Packed(zd.Annotations)
			if !ok {
				t.Fatalf("layer %d: the zTOC's annotations %v name no packed copy", i, zd.Annotations)
			}
			packed := readLayoutJSON(t, dir, ocispec.Descriptor{Digest: pd}, nil)
			if unpacked, err := soci.UnpackZtoc(packed, zd.Size, zd.Digest); err != nil || int64(len(packed)) != psize || !bytes.Equal(unpacked, zb) {
				t.Fatalf("layer %d: packed zTOC of %d bytes (annotated %d): %v", i, len(packed), psize, err)
			}
			blob := readLayoutJSON(t, dir, l, nil)
			if _, err := gzip.NewReader(bytes.NewReader(blob)); err != nil {
				t.Fatalf("layer %d in the indexed layout: %v", i, err)
			}
		}
	}
	check(t, dst)
	if _, err := convert.IndexImage(context.Background(), dst, dst, convert.IndexOptions{SpanSize: 64 << 10}); err != nil {
		t.Fatal(err)
	}
	check(t, dst)
}

func rootDigest(t *testing.T, dir string) digest.Digest {
	t.Helper()
	var idx ocispec.Index
	b, err := os.ReadFile(filepath.Join(dir, "index.json"))
	if err != nil || json.Unmarshal(b, &idx) != nil || len(idx.Manifests) != 1 {
		t.Fatalf("index.json of %s: %v", dir, err)
	}
	return idx.Manifests[0].Digest
}
