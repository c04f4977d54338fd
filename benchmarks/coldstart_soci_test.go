package benchmarks

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/lazysnap/lazysnap/convert"
	"github.com/lazysnap/lazysnap/internal/testenv/registry"
	"github.com/lazysnap/lazysnap/internal/testenv/socipeer"
	"github.com/lazysnap/lazysnap/soci"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// sociVariant writes the gzip layout src with a SOCI v2 index to dst: by
// lazysnap index (tag "soci") or by soci-snapshotter's library through the
// soci-peer oracle (tag "soci-peer"), every layer indexed at the default
// span size. It returns how long indexing took.
func sociVariant(t *testing.T, src, dst, tag string) time.Duration {
	t.Helper()
	start := time.Now()
	if tag == "soci" {
		if _, err := convert.IndexImage(context.Background(), src, dst, convert.IndexOptions{}); err != nil {
			t.Fatalf("index %s: %v", src, err)
		}
		return time.Since(start)
	}
	peer := socipeer.Binary(t)
	// blobs hardlinked (soci-peer adds blobs, never rewrites one), but
	// index.json copied: soci-peer rewrites it, and a link would rewrite
	// the source layout's (the cached gzip image)
	if out, err := exec.Command("cp", "-al", src, dst).CombinedOutput(); err != nil {
		t.Fatalf("copy %s: %v\n%s", src, err, out)
	}
	idx := filepath.Join(dst, "index.json")
	b, err := os.ReadFile(idx)
	if err == nil {
		if err = os.Remove(idx); err == nil {
			err = os.WriteFile(idx, b, 0o644)
		}
	}
	if err != nil {
		t.Fatal(err)
	}
	start = time.Now()
	if out, err := exec.Command(peer, "convert", dst).CombinedOutput(); err != nil {
		t.Fatalf("soci-peer convert %s: %v\n%s", dst, err, out)
	}
	return time.Since(start)
}

// rootOf is the descriptor index.json's first entry names.
func rootOf(t *testing.T, layout string) ocispec.Descriptor {
	t.Helper()
	var idx ocispec.Index
	b, err := os.ReadFile(filepath.Join(layout, "index.json"))
	if err == nil {
		err = json.Unmarshal(b, &idx)
	}
	if err != nil || len(idx.Manifests) == 0 {
		t.Fatalf("%s: index.json: %v", layout, err)
	}
	return idx.Manifests[0]
}

// imageOfIndex returns the image manifest of an image index (the entry
// that is not a SOCI index).
func imageOfIndex(layout string, d ocispec.Descriptor) (ocispec.Descriptor, error) {
	b, err := readBlob(layout, d)
	if err != nil {
		return d, err
	}
	var idx ocispec.Index
	if err := json.Unmarshal(b, &idx); err != nil {
		return d, err
	}
	for _, m := range idx.Manifests {
		if m.ArtifactType == "" {
			return m, nil
		}
	}
	return d, fmt.Errorf("%s: image index %s lists no image", layout, d.Digest)
}

// pushSociParts pushes what an image index lists besides the image
// manifest: each SOCI index manifest, its config and its zTOCs (with
// their packed copies, which lazysnap index writes).
func pushSociParts(t *testing.T, p *registry.Pusher, repo, layout string, root ocispec.Descriptor) {
	t.Helper()
	ctx := context.Background()
	b, err := readBlob(layout, root)
	if err != nil {
		t.Fatal(err)
	}
	var idx ocispec.Index
	if err := json.Unmarshal(b, &idx); err != nil {
		t.Fatal(err)
	}
	for _, d := range idx.Manifests {
		if d.ArtifactType != soci.ArtifactTypeV2 {
			continue
		}
		mb, err := readBlob(layout, d)
		if err != nil {
			t.Fatal(err)
		}
		var m ocispec.Manifest
		if err := json.Unmarshal(mb, &m); err != nil {
			t.Fatal(err)
		}
		parts := []ocispec.Descriptor{m.Config}
		for _, l := range m.Layers {
			parts = append(parts, l)
			if pd, psize, ok := soci.Packed(l.Annotations); ok { // lazysnap index's packed zTOC
				parts = append(parts, ocispec.Descriptor{MediaType: soci.PackedMediaType, Digest: pd, Size: psize})
			}
		}
		for _, c := range parts {
			cb, err := readBlob(layout, c)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := p.PushBlob(ctx, repo, cb); err != nil {
				t.Fatal(err)
			}
		}
		if _, err := p.PushManifest(ctx, repo, d.Digest.String(), ocispec.MediaTypeImageManifest, mb); err != nil {
			t.Fatal(err)
		}
	}
}
