package testimage

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"time"

	"github.com/opencontainers/go-digest"
	specs "github.com/opencontainers/image-spec/specs-go"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// imageNameAnnotation is containerd's annotation for the full image name
// on an index entry; `ctr images import` uses it as is when present.
const imageNameAnnotation = "io.containerd.image.name"

// Image is an OCI image held in memory: its blobs, index and manifest.
type Image struct {
	Blobs    map[digest.Digest][]byte
	Index    []byte // index.json
	Manifest ocispec.Descriptor
	Config   ocispec.Descriptor
	Layers   []ocispec.Descriptor
}

// New builds an image named name ("lazysnap.test/img:v1"; ":latest" is
// added when it has no tag) whose layers are the given uncompressed tars,
// bottom first, each stored gzip-compressed with its diff ID in the config.
// The platform is linux and the running GOARCH, so that containerd's default
// platform matcher accepts it. The index entry carries the tag as
// org.opencontainers.image.ref.name and the full name as
// io.containerd.image.name, which `ctr images import` uses as is. The
// result is deterministic.
func New(name string, layers ...[]byte) (*Image, error) {
	if strings.Contains(name, "@") {
		return nil, fmt.Errorf("testimage: %q: digest references are not supported", name)
	}
	tag := "latest"
	if i := strings.LastIndex(name, ":"); i > strings.LastIndex(name, "/") {
		tag = name[i+1:]
	} else {
		name += ":" + tag
	}

	blobs := map[digest.Digest][]byte{}
	add := func(mediaType string, b []byte) ocispec.Descriptor {
		d := digest.FromBytes(b)
		blobs[d] = b
		return ocispec.Descriptor{MediaType: mediaType, Digest: d, Size: int64(len(b))}
	}
	addJSON := func(mediaType string, v any) (ocispec.Descriptor, error) {
		b, err := json.Marshal(v)
		if err != nil {
			return ocispec.Descriptor{}, err
		}
		return add(mediaType, b), nil
	}

	platform := ocispec.Platform{Architecture: runtime.GOARCH, OS: "linux"}
	config := ocispec.Image{Platform: platform, RootFS: ocispec.RootFS{Type: "layers"}}
	config.Config.Cmd = []string{"/bin/sh"}
	manifest := ocispec.Manifest{
		Versioned: specs.Versioned{SchemaVersion: 2},
		MediaType: ocispec.MediaTypeImageManifest,
		Layers:    []ocispec.Descriptor{},
	}
	for i, layer := range layers {
		var gz bytes.Buffer
		zw := gzip.NewWriter(&gz) // no name or mtime: deterministic
		if _, err := zw.Write(layer); err != nil {
			return nil, err
		}
		if err := zw.Close(); err != nil {
			return nil, fmt.Errorf("testimage: compressing layer %d: %w", i, err)
		}
		config.RootFS.DiffIDs = append(config.RootFS.DiffIDs, digest.FromBytes(layer))
		manifest.Layers = append(manifest.Layers, add(ocispec.MediaTypeImageLayerGzip, gz.Bytes()))
	}
	var err error
	if manifest.Config, err = addJSON(ocispec.MediaTypeImageConfig, config); err != nil {
		return nil, err
	}
	mdesc, err := addJSON(ocispec.MediaTypeImageManifest, manifest)
	if err != nil {
		return nil, err
	}
	mdesc.Platform = &platform
	mdesc.Annotations = map[string]string{ocispec.AnnotationRefName: tag, imageNameAnnotation: name}
	index, err := json.Marshal(ocispec.Index{
		Versioned: specs.Versioned{SchemaVersion: 2},
		MediaType: ocispec.MediaTypeImageIndex,
		Manifests: []ocispec.Descriptor{mdesc},
	})
	if err != nil {
		return nil, err
	}
	return &Image{Blobs: blobs, Index: index, Manifest: mdesc, Config: manifest.Config, Layers: manifest.Layers}, nil
}

// order lists the image's blobs once each, in a fixed order.
func (img *Image) order() []digest.Digest {
	var out []digest.Digest
	seen := map[digest.Digest]bool{}
	for _, d := range append([]ocispec.Descriptor{img.Manifest, img.Config}, img.Layers...) {
		if !seen[d.Digest] { // identical layers share a blob
			seen[d.Digest] = true
			out = append(out, d.Digest)
		}
	}
	return out
}

var layoutFile = []byte(`{"imageLayoutVersion":"1.0.0"}`)

// Archive returns the image as a tar of an OCI image layout, for `ctr
// images import`.
func (img *Image) Archive() ([]byte, error) {
	var out bytes.Buffer
	tw := tar.NewWriter(&out)
	mtime := time.Unix(0, 0)
	file := func(name string, b []byte) error {
		h := &tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: 0o644, Size: int64(len(b)), ModTime: mtime}
		if err := tw.WriteHeader(h); err != nil {
			return err
		}
		_, err := tw.Write(b)
		return err
	}
	dir := func(name string) error {
		return tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: name, Mode: 0o755, ModTime: mtime})
	}
	if err := file(ocispec.ImageLayoutFile, layoutFile); err != nil {
		return nil, err
	}
	if err := file(ocispec.ImageIndexFile, img.Index); err != nil {
		return nil, err
	}
	if err := dir("blobs/"); err != nil {
		return nil, err
	}
	if err := dir("blobs/sha256/"); err != nil {
		return nil, err
	}
	for _, d := range img.order() {
		if err := file("blobs/sha256/"+d.Encoded(), img.Blobs[d]); err != nil {
			return nil, err
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	return out.Bytes(), nil
}

// WriteLayout writes the image as an OCI image layout directory.
func (img *Image) WriteLayout(dir string) error {
	if err := os.MkdirAll(filepath.Join(dir, "blobs", "sha256"), 0o755); err != nil {
		return err
	}
	for _, d := range img.order() {
		if err := os.WriteFile(filepath.Join(dir, "blobs", "sha256", d.Encoded()), img.Blobs[d], 0o644); err != nil {
			return err
		}
	}
	if err := os.WriteFile(filepath.Join(dir, ocispec.ImageLayoutFile), layoutFile, 0o644); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, ocispec.ImageIndexFile), img.Index, 0o644)
}

// OCIArchive builds an image and returns its archive.
func OCIArchive(name string, layers ...[]byte) ([]byte, error) {
	img, err := New(name, layers...)
	if err != nil {
		return nil, err
	}
	return img.Archive()
}

// Layout builds an image and writes it as a layout in dir; it returns the
// manifest's descriptor.
func Layout(dir, name string, layers ...[]byte) (ocispec.Descriptor, error) {
	img, err := New(name, layers...)
	if err != nil {
		return ocispec.Descriptor{}, err
	}
	return img.Manifest, img.WriteLayout(dir)
}
