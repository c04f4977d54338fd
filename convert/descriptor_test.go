package convert_test

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/lazysnap/lazysnap/convert"
	"github.com/lazysnap/lazysnap/internal/descriptor"
	"github.com/lazysnap/lazysnap/internal/testimage"
	"github.com/lazysnap/lazysnap/internal/testtar"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// brokenLayout writes an image of two layers to dir, its manifest and
// index.json edited by edit (the manifest is stored again under its new
// digest). The first layer stays good, so that a conversion has written
// something before it reaches what edit broke.
func brokenLayout(t *testing.T, dir string, edit func(m *ocispec.Manifest, entry *ocispec.Descriptor)) {
	t.Helper()
	img, err := testimage.New("example.com/broken:1", testtar.Synthetic(1<<10), testtar.Synthetic(2<<10))
	if err != nil {
		t.Fatal(err)
	}
	if err := img.WriteLayout(dir); err != nil {
		t.Fatal(err)
	}
	var m ocispec.Manifest
	if err := json.Unmarshal(img.Blobs[img.Manifest.Digest], &m); err != nil {
		t.Fatal(err)
	}
	entry := img.Manifest
	edit(&m, &entry)
	mb, err := json.Marshal(&m)
	if err != nil {
		t.Fatal(err)
	}
	md := digest.FromBytes(mb)
	if entry.Digest == img.Manifest.Digest { // edit did not replace the entry's digest
		entry.Digest, entry.Size = md, int64(len(mb))
	}
	if err := os.WriteFile(filepath.Join(dir, "blobs", "sha256", md.Encoded()), mb, 0o644); err != nil {
		t.Fatal(err)
	}
	ib, err := json.Marshal(ocispec.Index{Versioned: m.Versioned, MediaType: ocispec.MediaTypeImageIndex, Manifests: []ocispec.Descriptor{entry}})
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, ocispec.ImageIndexFile), ib, 0o644); err != nil {
		t.Fatal(err)
	}
}

// TestImageRejectsBadDescriptors: a descriptor with a missing or malformed
// digest, a negative size or a malformed media type, wherever it is (index
// entry, config, layer), fails the conversion with ErrLayout (and
// descriptor.ErrInvalid) instead of panicking, and leaves no destination,
// neither a directory nor an archive.
func TestImageRejectsBadDescriptors(t *testing.T) {
	for _, tc := range []struct {
		name string
		edit func(m *ocispec.Manifest, entry *ocispec.Descriptor)
	}{
		{"layer without digest", func(m *ocispec.Manifest, _ *ocispec.Descriptor) { m.Layers[1].Digest = "" }},
		{"layer with md5 digest", func(m *ocispec.Manifest, _ *ocispec.Descriptor) {
			m.Layers[1].Digest = "md5:d41d8cd98f00b204e9800998ecf8427e"
		}},
		{"layer with garbage digest", func(m *ocispec.Manifest, _ *ocispec.Descriptor) { m.Layers[1].Digest = "sha256:../../etc" }},
		{"layer with negative size", func(m *ocispec.Manifest, _ *ocispec.Descriptor) { m.Layers[1].Size = -1 }},
		{"layer without media type", func(m *ocispec.Manifest, _ *ocispec.Descriptor) { m.Layers[1].MediaType = "" }},
		{"layer with malformed media type", func(m *ocispec.Manifest, _ *ocispec.Descriptor) { m.Layers[1].MediaType = "tar+gzip" }},
		{"config without digest", func(m *ocispec.Manifest, _ *ocispec.Descriptor) { m.Config.Digest = "" }},
		{"config with negative size", func(m *ocispec.Manifest, _ *ocispec.Descriptor) { m.Config.Size = -3 }},
		{"config without media type", func(m *ocispec.Manifest, _ *ocispec.Descriptor) { m.Config.MediaType = "" }},
		{"index entry without digest", func(_ *ocispec.Manifest, e *ocispec.Descriptor) { e.Digest = "" }},
		{"index entry with sha1 digest", func(_ *ocispec.Manifest, e *ocispec.Descriptor) {
			e.Digest = "sha1:da39a3ee5e6b4b0d3255bfef95601890afd80709"
		}},
		{"index entry without media type", func(_ *ocispec.Manifest, e *ocispec.Descriptor) { e.MediaType = "" }},
	} {
		for _, dst := range []string{"out", "out.tar"} {
			t.Run(tc.name+" to "+dst, func(t *testing.T) {
				tmp := t.TempDir()
				src := filepath.Join(tmp, "src")
				brokenLayout(t, src, tc.edit)
				_, err := convert.Image(t.Context(), src, filepath.Join(tmp, dst), convert.Options{})
				if !errors.Is(err, convert.ErrLayout) || !errors.Is(err, descriptor.ErrInvalid) {
					t.Fatalf("Image error %v, want ErrLayout and descriptor.ErrInvalid", err)
				}
				ents, err := os.ReadDir(tmp)
				if err != nil {
					t.Fatal(err)
				}
				for _, e := range ents {
					if e.Name() != "src" {
						t.Errorf("a failed conversion left %s behind", e.Name())
					}
				}
			})
		}
	}
}
