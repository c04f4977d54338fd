package convert_test

import (
	"encoding/json"
	"os"
	"path/filepath"
	"testing"

	"github.com/lazysnap/lazysnap/convert"
	"github.com/lazysnap/lazysnap/internal/testimage"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// FuzzManifestAndConfig converts a layout whose manifest and config JSON are
// arbitrary (the layer blob stays valid): conversion must fail with a clear
// error or produce a layout, never panic. Seeds: testdata/fuzz/ and below.
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
		convert.Image(t.Context(), src, filepath.Join(dir, "out"), convert.Options{})
	})
}
