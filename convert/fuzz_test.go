package convert_test

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/lazysnap/lazysnap/convert"
	"github.com/lazysnap/lazysnap/estargz"
	"github.com/lazysnap/lazysnap/internal/descriptor"
	"github.com/lazysnap/lazysnap/internal/testimage"
	"github.com/lazysnap/lazysnap/internal/testtar"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// checkOutcome checks what a conversion of fuzzed input left: after a
// failure, no destination; after a success, a layout whose index.json
// entries and manifests name only valid descriptors.
func checkOutcome(t *testing.T, dst string, err error) {
	t.Helper()
	if err != nil {
		if _, serr := os.Stat(dst); !errors.Is(serr, os.ErrNotExist) {
			t.Fatalf("conversion failed (%v) but left %s (%v)", err, dst, serr)
		}
		return
	}
	b, rerr := os.ReadFile(filepath.Join(dst, ocispec.ImageIndexFile))
	var idx ocispec.Index
	if rerr != nil || json.Unmarshal(b, &idx) != nil {
		t.Fatalf("conversion succeeded without a readable index.json: %v", rerr)
	}
	for _, e := range idx.Manifests {
		if verr := descriptor.Validate(e); verr != nil {
			t.Fatalf("converted index entry: %v", verr)
		}
		if e.MediaType != ocispec.MediaTypeImageManifest {
			continue
		}
		var m ocispec.Manifest
		mb, rerr := os.ReadFile(filepath.Join(dst, "blobs", "sha256", e.Digest.Encoded()))
		if rerr != nil || json.Unmarshal(mb, &m) != nil {
			t.Fatalf("converted manifest %s unreadable: %v", e.Digest, rerr)
		}
		for _, d := range append([]ocispec.Descriptor{m.Config}, m.Layers...) {
			if verr := descriptor.Validate(d); verr != nil {
				t.Fatalf("converted manifest %s: %v", e.Digest, verr)
			}
		}
	}
}

// FuzzManifestAndConfig converts a layout whose manifest and config JSON are
// arbitrary (the layer blob stays valid): conversion must fail with a clear
// error or produce a layout, never panic, and a failure leaves no
// destination. Seeds: testdata/fuzz/ and below.
func FuzzManifestAndConfig(f *testing.F) {
	img, err := testimage.New("x", []byte{})
	if err != nil {
		f.Fatal(err)
	}
	layer := img.Layers[0]
	f.Add(img.Blobs[img.Manifest.Digest], img.Blobs[img.Config.Digest])
	f.Add([]byte(`{"schemaVersion":2,"config":{"digest":"sha256:zz"},"layers":[]}`), []byte(`{"rootfs":{"diff_ids":[]}}`))
	f.Add([]byte(`{"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"`+layer.Digest.String()+`","size":-5}]}`), []byte(`{"rootfs":null}`))
	f.Fuzz(func(t *testing.T, manifest, config []byte) {
		dir := t.TempDir()
		src := filepath.Join(dir, "src")
		if err := img.WriteLayout(src); err != nil {
			t.Fatal(err)
		}
		// the fuzzed config is stored under its digest; a manifest that
		// names it reaches the config parser
		cd := digest.FromBytes(config)
		os.WriteFile(filepath.Join(src, "blobs", "sha256", cd.Encoded()), config, 0o644)
		var m map[string]any
		if json.Unmarshal(manifest, &m) == nil && m != nil {
			m["config"] = ocispec.Descriptor{MediaType: ocispec.MediaTypeImageConfig, Digest: cd, Size: int64(len(config))}
			manifest, _ = json.Marshal(m)
		}
		md := digest.FromBytes(manifest)
		os.WriteFile(filepath.Join(src, "blobs", "sha256", md.Encoded()), manifest, 0o644)
		idx, _ := json.Marshal(ocispec.Index{Manifests: []ocispec.Descriptor{{MediaType: ocispec.MediaTypeImageManifest, Digest: md, Size: int64(len(manifest))}}})
		os.WriteFile(filepath.Join(src, "index.json"), idx, 0o644)
		dst := filepath.Join(dir, "out")
		_, err := convert.Image(t.Context(), src, dst, convert.Options{})
		checkOutcome(t, dst, err)
	})
}

// FuzzDescriptor converts a valid two-layer image one of whose
// descriptors (which: 0 the index.json entry, 1 the config, 2 and up a
// layer) has its digest, size, media type and an annotation replaced by
// fuzzed values (an empty digest or media type is kept as the fuzzer
// gives it: absent). Conversion must not panic; a failure leaves no
// destination, a success only valid descriptors.
func FuzzDescriptor(f *testing.F) {
	img, err := testimage.New("x:1", testtar.Synthetic(1<<10), testtar.Synthetic(512))
	if err != nil {
		f.Fatal(err)
	}
	l1 := img.Layers[1]
	f.Add(uint8(3), "", l1.Size, l1.MediaType, "", "")                                         // the layer without a digest of issue 11
	f.Add(uint8(3), "md5:d41d8cd98f00b204e9800998ecf8427e", l1.Size, l1.MediaType, "", "")     // an unregistered algorithm
	f.Add(uint8(2), img.Layers[0].Digest.String(), int64(-1), img.Layers[0].MediaType, "", "") // a negative size
	f.Add(uint8(1), img.Config.Digest.String(), img.Config.Size, "", "", "")                   // a config without media type
	f.Add(uint8(0), img.Manifest.Digest.String(), img.Manifest.Size, "application/vnd.oci.image.manifest.v1+json; x=y", "", "")
	f.Add(uint8(3), l1.Digest.String(), l1.Size, l1.MediaType, estargz.TOCJSONDigestAnnotation, "sha256:zz")
	f.Add(uint8(3), l1.Digest.String(), l1.Size, l1.MediaType, "", "")
	f.Fuzz(func(t *testing.T, which uint8, dgst string, size int64, mediaType, annKey, annValue string) {
		var m ocispec.Manifest
		if err := json.Unmarshal(img.Blobs[img.Manifest.Digest], &m); err != nil {
			t.Fatal(err)
		}
		entry := img.Manifest
		var d *ocispec.Descriptor
		switch {
		case which == 0:
			d = &entry
		case which == 1:
			d = &m.Config
		default:
			d = &m.Layers[int(which-2)%len(m.Layers)]
		}
		d.Digest, d.Size, d.MediaType = digest.Digest(dgst), size, mediaType
		if annKey != "" {
			d.Annotations = map[string]string{annKey: annValue}
		}
		dir := t.TempDir()
		src := filepath.Join(dir, "src")
		if err := img.WriteLayout(src); err != nil {
			t.Fatal(err)
		}
		if which != 0 {
			mb, _ := json.Marshal(&m)
			entry.Digest, entry.Size = digest.FromBytes(mb), int64(len(mb))
			os.WriteFile(filepath.Join(src, "blobs", "sha256", entry.Digest.Encoded()), mb, 0o644)
		}
		idx, _ := json.Marshal(ocispec.Index{Manifests: []ocispec.Descriptor{entry}})
		os.WriteFile(filepath.Join(src, ocispec.ImageIndexFile), idx, 0o644)
		for _, dst := range []string{filepath.Join(dir, "out"), filepath.Join(dir, "out.tar")} {
			_, err := convert.Image(t.Context(), src, dst, convert.Options{})
			if filepath.Ext(dst) == ".tar" {
				if _, serr := os.Stat(dst); err != nil && !errors.Is(serr, os.ErrNotExist) {
					t.Fatalf("conversion failed (%v) but left %s", err, dst)
				}
				continue
			}
			checkOutcome(t, dst, err)
		}
	})
}
