package testimage_test

import (
	"archive/tar"
	"bytes"
	"encoding/json"
	"io"
	"testing"

	"github.com/lazysnap/lazysnap/internal/testimage"
	"github.com/lazysnap/lazysnap/internal/testtar"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

func TestOCIArchive(t *testing.T) {
	layers := [][]byte{testtar.Synthetic(1 << 10), testtar.Synthetic(2 << 10)}
	a, err := testimage.OCIArchive("lazysnap.test/img", layers...)
	if err != nil {
		t.Fatal(err)
	}
	b, err := testimage.OCIArchive("lazysnap.test/img", layers...)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(a, b) {
		t.Error("OCIArchive is not deterministic")
	}
	files := map[string][]byte{}
	tr := tar.NewReader(bytes.NewReader(a))
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		files[h.Name], _ = io.ReadAll(tr)
	}
	blob := func(d digest.Digest) []byte {
		b, ok := files["blobs/sha256/"+d.Encoded()]
		if !ok || digest.FromBytes(b) != d {
			t.Fatalf("blob %s missing or corrupt", d)
		}
		return b
	}
	var idx ocispec.Index
	if err := json.Unmarshal(files["index.json"], &idx); err != nil || len(idx.Manifests) != 1 {
		t.Fatalf("index.json: %v %s", err, files["index.json"])
	}
	if ann := idx.Manifests[0].Annotations; ann[ocispec.AnnotationRefName] != "latest" || ann["io.containerd.image.name"] != "lazysnap.test/img:latest" {
		t.Errorf("index annotations %v", ann)
	}
	var m ocispec.Manifest
	if err := json.Unmarshal(blob(idx.Manifests[0].Digest), &m); err != nil {
		t.Fatal(err)
	}
	var c ocispec.Image
	if err := json.Unmarshal(blob(m.Config.Digest), &c); err != nil {
		t.Fatal(err)
	}
	if len(m.Layers) != 2 || len(c.RootFS.DiffIDs) != 2 {
		t.Fatalf("%d layers, %d diff_ids", len(m.Layers), len(c.RootFS.DiffIDs))
	}
	for i, l := range m.Layers {
		if c.RootFS.DiffIDs[i] != digest.FromBytes(layers[i]) {
			t.Errorf("layer %d: diff_id %s", i, c.RootFS.DiffIDs[i])
		}
		blob(l.Digest)
	}
}
