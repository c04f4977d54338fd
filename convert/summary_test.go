package convert_test

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/lazysnap/lazysnap/convert"
	"github.com/lazysnap/lazysnap/layer"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// TestWriteSummary: the lines `lazysnap convert` and `lazysnap index`
// print: the pull and push only for a registry, the bytes of what was
// converted or indexed only.
func TestWriteSummary(t *testing.T) {
	pull := &convert.PullReport{Ref: "r.example/a:1", Blobs: 4, Bytes: 400}
	push := &convert.PushReport{Ref: "r.example/a:2@sha256:x", Uploaded: 2, UploadedBytes: 90, Existing: 3}
	converted := convert.LayerReport{From: ocispec.Descriptor{Size: 100}, To: ocispec.Descriptor{Size: 120}, Result: &layer.Written{}}
	kept := convert.LayerReport{From: ocispec.Descriptor{Size: 7}, To: ocispec.Descriptor{Size: 7}, KeptReason: "foreign"}
	ztoc := &ocispec.Descriptor{Size: 30}
	root := ocispec.Descriptor{Digest: digest.FromString("index")}
	took := 1234567 * time.Microsecond
	for _, tc := range []struct {
		name  string
		write func(*bytes.Buffer) error
		want  string
	}{
		{"convert, layouts", func(b *bytes.Buffer) error {
			return (&convert.Report{Layers: []convert.LayerReport{converted, kept}, Manifests: 1}).WriteSummary(b, took)
		}, "converted 1 of 2 layers in 1 manifests: 107 -> 127 bytes in 1.235s\n"},
		{"convert, registries", func(b *bytes.Buffer) error {
			return (&convert.Report{Layers: []convert.LayerReport{converted}, Manifests: 2, Pull: pull, Push: push}).WriteSummary(b, took)
		}, "pulled r.example/a:1: 4 blobs, 400 bytes\nconverted 1 of 1 layers in 2 manifests: 100 -> 120 bytes in 1.235s\npushed r.example/a:2@sha256:x: 2 uploaded (90 bytes), 3 already in the registry\n"},
		{"index, one layer skipped", func(b *bytes.Buffer) error {
			return (&convert.IndexReport{Layers: []convert.IndexLayerReport{{Layer: ocispec.Descriptor{Size: 1000}, Ztoc: ztoc}, {Layer: ocispec.Descriptor{Size: 5}, Skipped: "small"}}, Manifests: 1, Root: root}).WriteSummary(b, took)
		}, "indexed 1 of 2 layers in 1 manifests: 1000 bytes of layers, 30 bytes of zTOCs, in 1.235s; image index " + root.Digest.String() + "\n"},
		{"index, registries", func(b *bytes.Buffer) error {
			return (&convert.IndexReport{Manifests: 1, Root: root, Pull: pull, Push: push}).WriteSummary(b, took)
		}, "pulled r.example/a:1: 4 blobs, 400 bytes\nindexed 0 of 0 layers in 1 manifests: 0 bytes of layers, 0 bytes of zTOCs, in 1.235s; image index " + root.Digest.String() + "\npushed r.example/a:2@sha256:x: 2 uploaded (90 bytes), 3 already in the registry\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var b bytes.Buffer
			if err := tc.write(&b); err != nil || b.String() != tc.want {
				t.Fatalf("wrote %q, %v; want %q", b.String(), err, tc.want)
			}
		})
	}
}

// TestReadPrioritized: -prioritized-files lists a path a line; blanks and
// comments are skipped, spaces trimmed.
func TestReadPrioritized(t *testing.T) {
	p := filepath.Join(t.TempDir(), "list")
	if err := os.WriteFile(p, []byte("# the entrypoint first\nbin/sh\n\n  etc/passwd  \n#usr/lib\nusr/lib/x.so"), 0o644); err != nil {
		t.Fatal(err)
	}
	got, err := convert.ReadPrioritized(p)
	if want := []string{"bin/sh", "etc/passwd", "usr/lib/x.so"}; err != nil || !slices.Equal(got, want) {
		t.Fatalf("ReadPrioritized = %q, %v; want %q", got, err, want)
	}
	if _, err := convert.ReadPrioritized(p + ".missing"); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("a missing list: %v", err)
	}
}
