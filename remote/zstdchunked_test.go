package remote

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/lazysnap/lazysnap/fetcher"
	"github.com/lazysnap/lazysnap/internal/testenv"
	"github.com/lazysnap/lazysnap/internal/testenv/registry"
	"github.com/lazysnap/lazysnap/internal/testimage"
	"github.com/lazysnap/lazysnap/internal/testtar"
	"github.com/lazysnap/lazysnap/layer"
	"github.com/lazysnap/lazysnap/snapshotter"
	"github.com/lazysnap/lazysnap/zstdchunked"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// TestZstdChunkedMount: zstd:chunked layers, written by our converter and
// by skopeo (Debian's 1.9, the legacy layout), pushed to a real registry,
// mount lazily from labels that carry no index digest (containerd does not
// pass the zstd:chunked annotations: Mount reads the manifest), and every
// file reads back as the source tar has it.
func TestZstdChunkedMount(t *testing.T) {
	r, f := startFUSERegistry(t)
	tarball := testtar.Synthetic(3 << 20)
	src, err := testtar.Read(tarball)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		push func(t *testing.T) (string, []ocispec.Descriptor)
	}{
		{"lazysnap convert", func(t *testing.T) (string, []ocispec.Descriptor) {
			return pushZstdChunked(t, r, "zc/ours", tarball)
		}},
		{"skopeo", func(t *testing.T) (string, []ocispec.Descriptor) {
			return skopeoZstdChunked(t, r, "zc/skopeo", tarball)
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ref, layers := tc.push(t)
			if _, ok, err := zstdchunked.ManifestDigest(layers[0].Annotations); !ok || err != nil {
				t.Fatalf("layer %+v: no zstd:chunked annotation (%v)", layers[0], err)
			}
			fs := New(NewRegistrySource(f), Options{Root: t.TempDir()})
			mp := t.TempDir()
			labels := map[string]string{
				snapshotter.LabelCRIImageRef:    ref,
				snapshotter.LabelCRILayerDigest: layers[0].Digest.String(),
				snapshotter.LabelCRIImageLayers: layers[0].Digest.String(),
			}
			if err := fs.Mount(context.Background(), mp, labels); err != nil {
				t.Fatalf("Mount: %v", err)
			}
			defer fs.Unmount(context.Background(), mp)
			if l := fs.Layers(); len(l) != 1 || l[0].Format != "zstd:chunked" {
				t.Fatalf("layers %+v, want one zstd:chunked", l)
			}
			compareTree(t, mp, src)
		})
	}
}

// compareTree checks the regular files and symlinks of src under dir.
func compareTree(t *testing.T, dir string, src map[string]*testtar.Entry) {
	t.Helper()
	files := 0
	for _, name := range testtar.Names(src) {
		e := src[name]
		p := filepath.Join(dir, name)
		switch e.Header.Typeflag {
		case '0':
			if strings.Contains(name, ".wh.") {
				continue
			}
			b, err := os.ReadFile(p)
			if err != nil || !bytes.Equal(b, e.Content) {
				t.Errorf("%s: %d bytes, %v; want %d bytes", name, len(b), err, len(e.Content))
			}
			files++
		case '2':
			if l, err := os.Readlink(p); err != nil || l != e.Header.Linkname {
				t.Errorf("%s: link %q, %v; want %q", name, l, err, e.Header.Linkname)
			}
		}
	}
	if files == 0 {
		t.Fatal("no file compared")
	}
}

// pushZstdChunked pushes a one-layer image whose layer is tarball as our
// converter writes zstd:chunked.
func pushZstdChunked(t *testing.T, r *registry.Registry, repo string, tarball []byte) (string, []ocispec.Descriptor) {
	t.Helper()
	ref, layers, _ := pushLayers(t, r, repo, write(t, zstdchunked.Writer{}, tarball, layer.WriteOptions{}))
	return ref, layers
}

// skopeoZstdChunked has skopeo convert a one-layer OCI layout of tarball
// to zstd:chunked on its way into the registry (a fresh repository: skopeo
// reuses a blob the repository already holds instead of compressing), and
// returns the layers of the manifest it pushed.
func skopeoZstdChunked(t *testing.T, r *registry.Registry, repo string, tarball []byte) (string, []ocispec.Descriptor) {
	t.Helper()
	skopeo := testenv.LookPath(t, "skopeo", "skopeo")
	dir := t.TempDir()
	if _, err := testimage.Layout(dir, "lazysnap.test/zc:v1", tarball); err != nil {
		t.Fatal(err)
	}
	ref := r.Ref(repo, "v1")
	cmd := exec.Command(skopeo, "--insecure-policy", "copy", "--dest-tls-verify=false", "--dest-compress",
		"--dest-compress-format", "zstd:chunked", "oci:"+dir+":v1", "docker://"+ref)
	cmd.Env = append(os.Environ(), "HOME="+t.TempDir())
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("skopeo copy: %v\n%s", err, out)
	}
	out, err := exec.Command(skopeo, "inspect", "--raw", "--tls-verify=false", "docker://"+ref).Output()
	if err != nil {
		t.Fatalf("skopeo inspect: %v", err)
	}
	var m ocispec.Manifest
	if err := json.Unmarshal(out, &m); err != nil {
		t.Fatal(err)
	}
	if len(m.Layers) != 1 || m.Layers[0].MediaType != ocispec.MediaTypeImageLayerZstd {
		t.Fatalf("skopeo pushed layers %+v, want one %s", m.Layers, ocispec.MediaTypeImageLayerZstd)
	}
	return ref, m.Layers
}

// TestNotLazyForgetsReadAhead: a Mount whose labels lack an index digest
// reads its blob's tail while it reads the manifest; when the manifest
// says the layer is not lazily loadable (a zstd layer without the
// zstd:chunked annotations), the Mount falls back and drops the read ahead.
func TestNotLazyForgetsReadAhead(t *testing.T) {
	r, hosts := startRegistry(t)
	f, err := fetcher.New(fetcher.Config{HostsDir: hosts})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	l := write(t, zstdchunked.Writer{}, testtar.Files([][2]string{{"a", "b"}}), layer.WriteOptions{})
	l.desc.Annotations = nil
	ref, layers, _ := pushLayers(t, r, "zc/plain", l)
	fs := New(NewRegistrySource(f), Options{Root: t.TempDir()})
	err = fs.Mount(context.Background(), t.TempDir(), map[string]string{
		snapshotter.LabelCRIImageRef:    ref,
		snapshotter.LabelCRILayerDigest: layers[0].Digest.String(),
		snapshotter.LabelCRIImageLayers: layers[0].Digest.String(),
	})
	if !errors.Is(err, snapshotter.ReasonNotLazy) {
		t.Fatalf("Mount of a plain zstd layer: %v, want not-lazy", err)
	}
	if fs.warm.mu.Lock(); len(fs.warm.m) != 0 {
		t.Errorf("%d layers left read ahead", len(fs.warm.m))
	}
	fs.warm.mu.Unlock()
}
