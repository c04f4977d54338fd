package convert_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"testing"

	"github.com/lazysnap/lazysnap/convert"
	"github.com/lazysnap/lazysnap/estargz"
	"github.com/lazysnap/lazysnap/internal/testimage"
	"github.com/lazysnap/lazysnap/internal/testtar"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

func readJSON(t *testing.T, dir string, d ocispec.Descriptor, v any) {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, "blobs", "sha256", d.Digest.Encoded()))
	if err != nil {
		t.Fatal(err)
	}
	if digest.FromBytes(b) != d.Digest {
		t.Fatalf("blob %s does not match its digest", d.Digest)
	}
	if err := json.Unmarshal(b, v); err != nil {
		t.Fatal(err)
	}
}

func TestImage(t *testing.T) {
	layer1 := testtar.Synthetic(5 << 20)
	layer2 := testtar.Synthetic(1 << 10)
	for _, tc := range []struct {
		name    string
		dst     string // relative to a temp dir
		archive bool   // source given as an archive
	}{
		{name: "layout to layout", dst: "out"},
		{name: "layout to archive", dst: "out.tar"},
		{name: "in place", dst: "src"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tmp := t.TempDir()
			src := filepath.Join(tmp, "src")
			if _, err := testimage.Layout(src, "example.com/test:1", layer1, layer2, layer1); err != nil {
				t.Fatal(err)
			}
			dst := filepath.Join(tmp, tc.dst)
			rep, err := convert.Image(t.Context(), src, dst, convert.Options{Prioritized: []string{"etc/hostname"}})
			if err != nil {
				t.Fatalf("Image: %v", err)
			}
			if filepath.Ext(dst) == ".tar" {
				// converting the archive again must keep every layer as is
				again := filepath.Join(tmp, "again")
				rep2, err := convert.Image(t.Context(), dst, again, convert.Options{})
				if err != nil {
					t.Fatalf("Image from archive: %v", err)
				}
				for _, l := range rep2.Layers {
					if l.Result != nil || l.KeptReason != "already eStargz" {
						t.Errorf("second conversion touched layer %s (%q)", l.From.Digest, l.KeptReason)
					}
				}
				dst = again
			}
			if rep.Manifests != 1 || len(rep.Layers) != 2 { // the repeated layer converts once
				t.Fatalf("report: %d manifests, %d layers", rep.Manifests, len(rep.Layers))
			}
			var idx ocispec.Index
			b, err := os.ReadFile(filepath.Join(dst, "index.json"))
			if err != nil || json.Unmarshal(b, &idx) != nil || len(idx.Manifests) != 1 {
				t.Fatalf("index.json: %v %s", err, b)
			}
			if a := idx.Manifests[0].Annotations; a[ocispec.AnnotationRefName] != "1" || a["io.containerd.image.name"] != "example.com/test:1" {
				t.Errorf("ref name annotation lost: %v", idx.Manifests[0].Annotations)
			}
			var m ocispec.Manifest
			readJSON(t, dst, idx.Manifests[0], &m)
			var cfg ocispec.Image
			readJSON(t, dst, m.Config, &cfg)
			if len(m.Layers) != 3 || len(cfg.RootFS.DiffIDs) != 3 || cfg.Config.Cmd[0] != "/bin/sh" {
				t.Fatalf("manifest/config: %d layers, %d diff_ids, cmd %q", len(m.Layers), len(cfg.RootFS.DiffIDs), cfg.Config.Cmd)
			}
			for i, l := range m.Layers {
				blob, err := os.ReadFile(filepath.Join(dst, "blobs", "sha256", l.Digest.Encoded()))
				if err != nil {
					t.Fatal(err)
				}
				if digest.FromBytes(blob) != l.Digest || int64(len(blob)) != l.Size {
					t.Fatalf("layer %d does not match its descriptor", i)
				}
				toc := digest.Digest(l.Annotations[estargz.TOCJSONDigestAnnotation])
				r, err := estargz.Open(io.NewSectionReader(bytes.NewReader(blob), 0, l.Size), estargz.WithTOCDigest(toc))
				if err != nil {
					t.Fatalf("layer %d: %v", i, err)
				}
				size, err := strconv.ParseInt(l.Annotations[estargz.UncompressedSizeAnnotation], 10, 64)
				if err != nil || size <= int64(len(layer2)) {
					t.Errorf("layer %d: uncompressed size annotation %q", i, l.Annotations[estargz.UncompressedSizeAnnotation])
				}
				if _, err := r.Lookup("usr/bin/tool"); err != nil {
					t.Errorf("layer %d: %v", i, err)
				}
				if r.TOC().PrefetchEnd == 0 {
					t.Errorf("layer %d: prioritized file not placed first", i)
				}
			}
		})
	}
}

func TestImageRejectsTamperedLayer(t *testing.T) {
	tmp := t.TempDir()
	src := filepath.Join(tmp, "src")
	md, err := testimage.Layout(src, "x", testtar.Synthetic(1<<10))
	if err != nil {
		t.Fatal(err)
	}
	var m ocispec.Manifest
	readJSON(t, src, md, &m)
	p := filepath.Join(src, "blobs", "sha256", m.Layers[0].Digest.Encoded())
	b, _ := os.ReadFile(p)
	b[len(b)-20] ^= 0xff
	os.WriteFile(p, b, 0o644)
	_, err = convert.Image(t.Context(), src, filepath.Join(tmp, "out"), convert.Options{})
	if !errors.Is(err, convert.ErrLayout) {
		t.Fatalf("Image error %v, want ErrLayout", err)
	}
	if _, err := os.Stat(filepath.Join(tmp, "out", "index.json")); err == nil {
		t.Fatalf("a failed conversion wrote index.json")
	}
}
