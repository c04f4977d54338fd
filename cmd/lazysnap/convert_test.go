package main

import (
	"bytes"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/lazysnap/lazysnap/convert"
	"github.com/lazysnap/lazysnap/estargz"
	"github.com/lazysnap/lazysnap/internal/testenv"
	"github.com/lazysnap/lazysnap/internal/testimage"
	"github.com/lazysnap/lazysnap/internal/testtar"
	"github.com/lazysnap/lazysnap/layer"
	"github.com/opencontainers/go-digest"
)

func TestConvertRecordUsage(t *testing.T) {
	src := t.TempDir()
	for _, tc := range []struct {
		name string
		args []string
	}{
		{"record without a command", []string{"convert", "-record", src, "dst"}},
		{"command without record", []string{"convert", src, "dst", "--", "/bin/true"}},
		{"record with an empty command", []string{"convert", "-record", src, "dst", "--"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			if code := run(tc.args, &stdout, &stderr); code != 2 || !strings.Contains(stderr.String(), "-record and a command") {
				t.Fatalf("exit %d, want 2\nstderr: %s", code, stderr.String())
			}
		})
	}
}

// TestConvertRecord: convert -record runs the command in the image,
// writes the files it opened to DST.prioritized and puts them first in
// the converted layer, before the prefetch landmark.
func TestConvertRecord(t *testing.T) {
	testenv.NeedRoot(t, "chroot, fanotify")
	bb := testenv.ReadFile(t, "/bin/busybox", "Debian busybox-static")
	tmp := t.TempDir()
	src := filepath.Join(tmp, "src")
	tarball := testtar.Files([][2]string{
		{"bin/busybox", string(bb)}, {"data/unread", "not opened\n"}, {"data/one", "one\n"},
		{"etc/passwd", "root:x:0:0::/root:/bin/sh\n"}, {"etc/other", "x\n"},
	})
	if _, err := testimage.Layout(src, "lazysnap.test/record:1", tarball); err != nil {
		t.Fatal(err)
	}
	dst := filepath.Join(tmp, "dst")
	var stdout, stderr bytes.Buffer
	if code := run([]string{"convert", "-record", src, dst, "--", "/bin/busybox", "cat", "/data/one"}, &stdout, &stderr); code != 0 {
		t.Fatalf("exit %d\nstderr: %s", code, stderr.String())
	}
	if !strings.Contains(stderr.String(), "one\n") {
		t.Errorf("the command's output is not on stderr: %q", stderr.String())
	}
	list, err := os.ReadFile(dst + ".prioritized")
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"etc/passwd", "bin/busybox", "data/one"}
	if got := strings.Fields(string(list)); !slices.Equal(got, want) {
		t.Fatalf("recorded %q, want %q", got, want)
	}
	layers, err := convert.LayoutLayers(dst)
	if err != nil || len(layers) != 1 {
		t.Fatalf("converted layers %v: %v", layers, err)
	}
	blob, err := convert.LayoutBlobPath(dst, layers[0])
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(blob)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	r, err := estargz.Open(io.NewSectionReader(f, 0, layers[0].Size),
		estargz.WithTOCDigest(digest.Digest(layers[0].Annotations[estargz.TOCJSONDigestAnnotation])))
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range r.TOC().Entries {
		if e.Type == layer.TypeReg {
			names = append(names, e.Name)
		}
	}
	if got := names[:len(want)+1]; !slices.Equal(got, append(want, estargz.PrefetchLandmark)) {
		t.Errorf("converted layer starts with %q, want %q and the landmark", got, want)
	}
}

// TestConvertAmbiguousLocation: a string that reads as a reference and
// exists as a path is refused, and a prefix settles it.
func TestConvertAmbiguousLocation(t *testing.T) {
	t.Chdir(t.TempDir())
	if _, err := testimage.Layout("registry.example/app", "lazysnap.test/amb:1", testtar.Files([][2]string{{"f", "x"}})); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		args []string
		code int
		want string
	}{
		{"ambiguous", []string{"convert", "registry.example/app", "out"}, 2, "both a path and an image reference"},
		{"oci prefix", []string{"convert", "oci:registry.example/app", "out"}, 0, "converted 1 of 1 layers"},
		{"dot-slash", []string{"convert", "./registry.example/app", "out2"}, 0, "converted 1 of 1 layers"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			if code := run(tc.args, &stdout, &stderr); code != tc.code || !strings.Contains(stdout.String()+stderr.String(), tc.want) {
				t.Fatalf("exit %d, want %d and %q\nstdout: %s\nstderr: %s", code, tc.code, tc.want, stdout.String(), stderr.String())
			}
		})
	}
}
