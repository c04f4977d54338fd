package convert

import (
	"archive/tar"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/lazysnap/lazysnap/internal/descriptor"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// ErrLayout means the source is not a readable OCI image layout.
var ErrLayout = errors.New("convert: invalid OCI image layout")

// layout is an OCI image layout directory.
type layout struct{ dir string }

// blobPath is where the blob d is. d must have been validated
// (descriptor.Digest): a digest without an algorithm panics here, and one
// with a path in it would lead out of the layout.
func (l layout) blobPath(d digest.Digest) string {
	return filepath.Join(l.dir, "blobs", d.Algorithm().String(), d.Encoded())
}

// validDescriptor checks a descriptor read from an image (a layout's
// index.json, a manifest, an index) before its digest names a file.
func validDescriptor(what string, d ocispec.Descriptor) error {
	if err := descriptor.Validate(d); err != nil {
		return fmt.Errorf("%w: %s: %w", ErrLayout, what, err)
	}
	return nil
}

// readBlob reads a small blob (manifest, index, config) and verifies it.
func (l layout) readBlob(what string, desc ocispec.Descriptor, limit int64) ([]byte, error) {
	if err := validDescriptor(what, desc); err != nil {
		return nil, err
	}
	if desc.Size > limit {
		return nil, fmt.Errorf("%w: blob %s is %d bytes, cap %d", ErrLayout, desc.Digest, desc.Size, limit)
	}
	b, err := os.ReadFile(l.blobPath(desc.Digest))
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrLayout, err)
	}
	if int64(len(b)) != desc.Size || desc.Digest.Algorithm().FromBytes(b) != desc.Digest {
		return nil, fmt.Errorf("%w: blob %s does not match its descriptor", ErrLayout, desc.Digest)
	}
	return b, nil
}

// LayoutLayers returns the layer descriptors of the image manifest that
// is the first entry of the index.json of the OCI image layout directory
// dir, bottom layer first (what a container of that image stacks). The
// manifest is read through its descriptor and verified against it, and
// every layer descriptor is validated, so LayoutBlobPath accepts each. An
// unreadable layout, a first entry that is not an image manifest with
// layers (an image index, say) or a bad descriptor is ErrLayout.
func LayoutLayers(dir string) ([]ocispec.Descriptor, error) {
	l := layout{dir}
	idx, err := l.readIndex()
	if err != nil {
		return nil, err
	}
	if len(idx.Manifests) == 0 {
		return nil, fmt.Errorf("%w: %s: no manifest in index.json", ErrLayout, dir)
	}
	md := idx.Manifests[0]
	b, err := l.readBlob("index.json entry 0", md, maxJSONBlob)
	if err != nil {
		return nil, err
	}
	var m ocispec.Manifest
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, fmt.Errorf("%w: manifest %s: %v", ErrLayout, md.Digest, err)
	}
	if len(m.Layers) == 0 {
		return nil, fmt.Errorf("%w: %s: the first index.json entry is not an image manifest with layers", ErrLayout, dir)
	}
	for i, d := range m.Layers {
		if err := validDescriptor(fmt.Sprintf("manifest %s layer %d", md.Digest, i), d); err != nil {
			return nil, err
		}
	}
	return m.Layers, nil
}

// LayoutBlobPath returns the file that holds the blob of d in the OCI image
// layout directory dir. d is validated first (ErrLayout if its digest or
// size is malformed), so the path never leads out of the layout; whether
// the file exists, or matches d, is not checked.
func LayoutBlobPath(dir string, d ocispec.Descriptor) (string, error) {
	if err := validDescriptor("blob", d); err != nil {
		return "", err
	}
	return layout{dir}.blobPath(d.Digest), nil
}

// writeBlob stores b and returns its descriptor.
func (l layout) writeBlob(mediaType string, b []byte) (ocispec.Descriptor, error) {
	d := digest.FromBytes(b)
	desc := ocispec.Descriptor{MediaType: mediaType, Digest: d, Size: int64(len(b))}
	p := l.blobPath(d)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		return desc, err
	}
	return desc, writeFileAtomic(p, b)
}

// adoptBlob moves a finished blob file into the layout under its digest.
func (l layout) adoptBlob(tmp string, d digest.Digest) error {
	p := l.blobPath(d)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		return err
	}
	return os.Rename(tmp, p)
}

// copyBlob copies a blob from l into dst unless dst has it.
func (l layout) copyBlob(dst layout, d digest.Digest) error {
	to := dst.blobPath(d)
	if _, err := os.Stat(to); err == nil {
		return nil
	}
	in, err := os.Open(l.blobPath(d))
	if err != nil {
		return fmt.Errorf("%w: %v", ErrLayout, err)
	}
	defer in.Close()
	if err := os.MkdirAll(filepath.Dir(to), 0o755); err != nil {
		return err
	}
	tmp, err := os.CreateTemp(filepath.Dir(to), ".tmp-")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	h := d.Algorithm().Digester()
	if _, err := io.Copy(io.MultiWriter(tmp, h.Hash()), in); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	if h.Digest() != d {
		return fmt.Errorf("%w: blob %s does not match its digest", ErrLayout, d)
	}
	return os.Rename(tmp.Name(), to)
}

func (l layout) readIndex() (*ocispec.Index, error) {
	b, err := os.ReadFile(filepath.Join(l.dir, ocispec.ImageLayoutFile))
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %v", ErrLayout, l.dir, err)
	}
	var ol ocispec.ImageLayout
	if err := json.Unmarshal(b, &ol); err != nil || ol.Version != ocispec.ImageLayoutVersion {
		return nil, fmt.Errorf("%w: %s: oci-layout version %q", ErrLayout, l.dir, ol.Version)
	}
	b, err = os.ReadFile(filepath.Join(l.dir, ocispec.ImageIndexFile))
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrLayout, err)
	}
	var idx ocispec.Index
	if err := json.Unmarshal(b, &idx); err != nil {
		return nil, fmt.Errorf("%w: index.json: %v", ErrLayout, err)
	}
	return &idx, nil
}

func (l layout) writeIndex(idx *ocispec.Index) error {
	if err := os.MkdirAll(l.dir, 0o755); err != nil {
		return err
	}
	ol, _ := json.Marshal(ocispec.ImageLayout{Version: ocispec.ImageLayoutVersion})
	if err := writeFileAtomic(filepath.Join(l.dir, ocispec.ImageLayoutFile), ol); err != nil {
		return err
	}
	b, err := json.Marshal(idx)
	if err != nil {
		return err
	}
	return writeFileAtomic(filepath.Join(l.dir, ocispec.ImageIndexFile), b)
}

func writeFileAtomic(path string, b []byte) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), ".tmp-")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(b); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}

// extractArchive unpacks an OCI archive tar into dir. Only regular files and
// directories under dir are created.
func extractArchive(archive, dir string) error {
	f, err := os.Open(archive)
	if err != nil {
		return err
	}
	defer f.Close()
	tr := tar.NewReader(f)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return fmt.Errorf("%w: archive %s: %v", ErrLayout, archive, err)
		}
		name := filepath.Clean(h.Name)
		if filepath.IsAbs(name) || name == ".." || strings.HasPrefix(name, "../") {
			return fmt.Errorf("%w: archive entry %q escapes", ErrLayout, h.Name)
		}
		p := filepath.Join(dir, name)
		switch h.Typeflag {
		case tar.TypeDir:
			if err := os.MkdirAll(p, 0o755); err != nil {
				return err
			}
		case tar.TypeReg:
			if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
				return err
			}
			out, err := os.Create(p)
			if err != nil {
				return err
			}
			_, err = io.Copy(out, tr)
			if cerr := out.Close(); err == nil {
				err = cerr
			}
			if err != nil {
				return err
			}
		}
	}
}

// writeArchive tars the layout in dir into archive.
func writeArchive(dir, archive string) error {
	tmp, err := os.CreateTemp(filepath.Dir(archive), ".tmp-")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	tw := tar.NewWriter(tmp)
	err = filepath.Walk(dir, func(p string, fi os.FileInfo, err error) error {
		if err != nil || p == dir {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		h, err := tar.FileInfoHeader(fi, "")
		if err != nil {
			return err
		}
		h.Name = filepath.ToSlash(rel)
		h.Uid, h.Gid, h.Uname, h.Gname = 0, 0, "", ""
		if err := tw.WriteHeader(h); err != nil {
			return err
		}
		if fi.Mode().IsRegular() {
			f, err := os.Open(p)
			if err != nil {
				return err
			}
			defer f.Close()
			_, err = io.Copy(tw, f)
			return err
		}
		return nil
	})
	if err == nil {
		err = tw.Close()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	return os.Rename(tmp.Name(), archive)
}
