// Package testimage writes small OCI images for tests: an image layout
// directory with gzip-compressed tar layers, optionally archived as a tar
// that `ctr images import` accepts.
package testimage

import (
	"bytes"
	"compress/gzip"
	"encoding/json"
	"os"
	"path/filepath"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// Layout writes an OCI image layout in dir holding one linux/amd64 image
// named ref whose layers are the given tars, gzip-compressed. It returns the
// manifest's descriptor.
func Layout(dir, ref string, layers ...[]byte) (ocispec.Descriptor, error) {
	put := func(mediaType string, b []byte) (ocispec.Descriptor, error) {
		d := digest.FromBytes(b)
		p := filepath.Join(dir, "blobs", "sha256", d.Encoded())
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			return ocispec.Descriptor{}, err
		}
		return ocispec.Descriptor{MediaType: mediaType, Digest: d, Size: int64(len(b))}, os.WriteFile(p, b, 0o644)
	}
	var m ocispec.Manifest
	m.SchemaVersion, m.MediaType = 2, ocispec.MediaTypeImageManifest
	cfg := ocispec.Image{Platform: ocispec.Platform{Architecture: "amd64", OS: "linux"}, RootFS: ocispec.RootFS{Type: "layers"}}
	cfg.Config.Cmd = []string{"/bin/sh"}
	for _, l := range layers {
		var z bytes.Buffer
		zw := gzip.NewWriter(&z)
		zw.Write(l)
		zw.Close()
		d, err := put(ocispec.MediaTypeImageLayerGzip, z.Bytes())
		if err != nil {
			return d, err
		}
		m.Layers = append(m.Layers, d)
		cfg.RootFS.DiffIDs = append(cfg.RootFS.DiffIDs, digest.FromBytes(l))
	}
	cb, _ := json.Marshal(cfg)
	var err error
	if m.Config, err = put(ocispec.MediaTypeImageConfig, cb); err != nil {
		return m.Config, err
	}
	mb, _ := json.Marshal(m)
	md, err := put(ocispec.MediaTypeImageManifest, mb)
	if err != nil {
		return md, err
	}
	md.Annotations = map[string]string{ocispec.AnnotationRefName: ref}
	md.Platform = &ocispec.Platform{Architecture: "amd64", OS: "linux"}
	ib, _ := json.Marshal(ocispec.Index{Versioned: m.Versioned, MediaType: ocispec.MediaTypeImageIndex, Manifests: []ocispec.Descriptor{md}})
	ol, _ := json.Marshal(ocispec.ImageLayout{Version: ocispec.ImageLayoutVersion})
	if err := os.WriteFile(filepath.Join(dir, ocispec.ImageLayoutFile), ol, 0o644); err != nil {
		return md, err
	}
	return md, os.WriteFile(filepath.Join(dir, ocispec.ImageIndexFile), ib, 0o644)
}
