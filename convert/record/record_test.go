package record

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/lazysnap/lazysnap/convert"
	"github.com/lazysnap/lazysnap/internal/testenv"
	"github.com/lazysnap/lazysnap/internal/testimage"
)

// layer builds an uncompressed tar layer from entries (a name ending in
// "/" is a directory, "->" separates a symlink from its target).
func layer(t *testing.T, entries ...string) []byte {
	t.Helper()
	var b bytes.Buffer
	tw := tar.NewWriter(&b)
	mt := time.Unix(1700000000, 0)
	for _, e := range entries {
		name, content, _ := strings.Cut(e, "=")
		var h *tar.Header
		switch {
		case strings.HasSuffix(name, "/"):
			h = &tar.Header{Typeflag: tar.TypeDir, Name: name, Mode: 0o755}
		case strings.Contains(name, "->"):
			n, target, _ := strings.Cut(name, "->")
			h = &tar.Header{Typeflag: tar.TypeSymlink, Name: n, Linkname: target, Mode: 0o777}
		default:
			h = &tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: 0o755, Size: int64(len(content))}
		}
		h.ModTime = mt
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		tw.Write([]byte(content))
	}
	tw.Close()
	return b.Bytes()
}

func TestUnpackWhiteouts(t *testing.T) {
	dir := t.TempDir()
	layout := filepath.Join(dir, "layout")
	_, err := testimage.Layout(layout, "lazysnap.test/record:1",
		layer(t, "etc/", "etc/a=1", "etc/b=2", "opt/", "opt/x=3", "opt/y=4", "lib->etc"),
		layer(t, "etc/.wh.a=", "opt/", "opt/.wh..wh..opq=", "opt/z=5", "etc/c=6"))
	if err != nil {
		t.Fatal(err)
	}
	root := filepath.Join(dir, "root")
	if err := Unpack(layout, root); err != nil {
		t.Fatal(err)
	}
	var got []string
	filepath.WalkDir(root, func(p string, d os.DirEntry, err error) error {
		if err == nil && p != root {
			got = append(got, strings.TrimPrefix(p, root+"/"))
		}
		return err
	})
	want := []string{"etc", "etc/b", "etc/c", "lib", "opt", "opt/z"}
	if !slices.Equal(got, want) {
		t.Fatalf("unpacked %q, want %q", got, want)
	}
	if l, _ := os.Readlink(filepath.Join(root, "lib")); l != "etc" {
		t.Errorf("symlink lib -> %q", l)
	}
}

func TestUnpackRejectsEscapes(t *testing.T) {
	dir := t.TempDir()
	layout := filepath.Join(dir, "layout")
	if _, err := testimage.Layout(layout, "lazysnap.test/record:2", layer(t, "x->/etc", "x/passwd=oops")); err != nil {
		t.Fatal(err)
	}
	if err := Unpack(layout, filepath.Join(dir, "root")); err == nil {
		t.Fatal("a file written through an absolute symlink was accepted")
	}
	if b, _ := os.ReadFile("/etc/passwd"); strings.HasPrefix(string(b), "oops") {
		t.Fatal("wrote outside the root")
	}
}

func TestUnpackBadLayout(t *testing.T) {
	dir := t.TempDir()
	if err := Unpack(dir, filepath.Join(dir, "root")); !errors.Is(err, convert.ErrLayout) {
		t.Fatalf("Unpack of an empty directory: %v, want convert.ErrLayout", err)
	}
}

// TestTrace records a static busybox reading files through a symlink.
func TestTrace(t *testing.T) {
	testenv.NeedRoot(t, "fanotify")
	bb := testenv.ReadFile(t, "/bin/busybox", "Debian busybox-static")
	root := t.TempDir()
	os.MkdirAll(filepath.Join(root, "bin"), 0o755)
	os.MkdirAll(filepath.Join(root, "data"), 0o755)
	os.WriteFile(filepath.Join(root, "bin", "busybox"), bb, 0o755)
	os.Symlink("busybox", filepath.Join(root, "bin", "sh"))
	os.WriteFile(filepath.Join(root, "data", "one"), []byte("one\n"), 0o644)
	os.WriteFile(filepath.Join(root, "data", "two"), []byte("two\n"), 0o644)
	os.WriteFile(filepath.Join(root, "data", "unread"), []byte("x\n"), 0o644)
	os.Symlink("two", filepath.Join(root, "data", "link"))
	var out bytes.Buffer
	got, err := Trace(context.Background(), root, []string{"sh", "-c", "busybox cat /data/one /data/link /data/one; busybox ls /data >/dev/null"}, Options{Stdout: &out})
	if err != nil {
		t.Fatal(err)
	}
	if out.String() != "one\ntwo\none\n" {
		t.Errorf("output %q", out.String())
	}
	if want := []string{"bin/busybox", "data/one", "data/two"}; !slices.Equal(got, want) {
		t.Errorf("recorded %q, want %q", got, want)
	}
}
