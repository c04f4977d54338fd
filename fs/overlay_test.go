package fs_test

import (
	"archive/tar"
	"bytes"
	"context"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/containerd/containerd/v2/pkg/archive"
	"github.com/lazysnap/lazysnap/fs/fetch"
	"golang.org/x/sys/unix"
)

func tarOf(t *testing.T, entries ...tar.Header) []byte {
	t.Helper()
	var b bytes.Buffer
	tw := tar.NewWriter(&b)
	for _, h := range entries {
		content := []byte(h.Linkname)
		if h.Typeflag == tar.TypeReg {
			content = []byte("content of " + h.Name)
			h.Size = int64(len(content))
			h.Linkname = ""
		}
		if h.Mode == 0 {
			h.Mode = 0o755
		}
		h.ModTime = time.Unix(1700000000, 0)
		if err := tw.WriteHeader(&h); err != nil {
			t.Fatal(err)
		}
		if h.Typeflag == tar.TypeReg {
			tw.Write(content)
		}
	}
	tw.Close()
	return b.Bytes()
}

// tree describes a directory tree: path → type, mode, and content or link.
func tree(t *testing.T, root string) map[string]string {
	t.Helper()
	out := map[string]string{}
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		var st syscall.Stat_t
		if err := syscall.Lstat(p, &st); err != nil {
			return err
		}
		desc := fmt.Sprintf("%o", st.Mode)
		switch st.Mode & syscall.S_IFMT {
		case syscall.S_IFREG:
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			desc += " " + string(b)
		case syscall.S_IFLNK:
			l, _ := os.Readlink(p)
			desc += " -> " + l
		}
		out[rel] = desc
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// TestOverlayMatchesContainerdApplier stacks two mounted layers, the upper
// with whiteouts and an opaque directory, under a real overlay mount and
// compares the result with the same layers unpacked by containerd's applier.
func TestOverlayMatchesContainerdApplier(t *testing.T) {
	requireFUSE(t)
	lower := tarOf(t,
		tar.Header{Typeflag: tar.TypeDir, Name: "a/"},
		tar.Header{Typeflag: tar.TypeReg, Name: "a/1"},
		tar.Header{Typeflag: tar.TypeReg, Name: "a/2"},
		tar.Header{Typeflag: tar.TypeDir, Name: "b/"},
		tar.Header{Typeflag: tar.TypeReg, Name: "b/x"},
		tar.Header{Typeflag: tar.TypeDir, Name: "b/sub/"},
		tar.Header{Typeflag: tar.TypeReg, Name: "b/sub/deep"},
		tar.Header{Typeflag: tar.TypeReg, Name: "c", Mode: 0o600},
		tar.Header{Typeflag: tar.TypeSymlink, Name: "d", Linkname: "a/2"},
		tar.Header{Typeflag: tar.TypeReg, Name: "e"},
	)
	upper := tarOf(t,
		tar.Header{Typeflag: tar.TypeReg, Name: ".wh.c"},
		tar.Header{Typeflag: tar.TypeDir, Name: "a/"},
		tar.Header{Typeflag: tar.TypeReg, Name: "a/.wh.1"},
		tar.Header{Typeflag: tar.TypeReg, Name: "a/3"},
		tar.Header{Typeflag: tar.TypeDir, Name: "b/", Mode: 0o700},
		tar.Header{Typeflag: tar.TypeReg, Name: "b/.wh..wh..opq"},
		tar.Header{Typeflag: tar.TypeReg, Name: "b/y"},
		tar.Header{Typeflag: tar.TypeReg, Name: "e", Mode: 0o644},
		tar.Header{Typeflag: tar.TypeReg, Name: ".wh.d"},
	)
	var mnts []string
	for _, layer := range [][]byte{upper, lower} {
		l, _ := layerOf(t, layer, fetch.Options{NoPrefetch: true, NoBackground: true})
		mnt, _ := mount(t, l)
		mnts = append(mnts, mnt)
	}
	merged := t.TempDir()
	if err := unix.Mount("overlay", merged, "overlay", unix.MS_RDONLY, "lowerdir="+strings.Join(mnts, ":")); err != nil {
		t.Fatalf("overlay mount: %v", err)
	}
	t.Cleanup(func() {
		if unix.Unmount(merged, 0) != nil {
			unix.Unmount(merged, unix.MNT_DETACH)
		}
	})

	applied := t.TempDir()
	for _, layer := range [][]byte{lower, upper} {
		if _, err := archive.Apply(context.Background(), applied, bytes.NewReader(layer)); err != nil {
			t.Fatalf("containerd applier: %v", err)
		}
	}
	got, want := tree(t, merged), tree(t, applied)
	delete(got, ".")
	delete(want, ".")
	var keys []string
	for k := range want {
		keys = append(keys, k)
	}
	for k := range got {
		if _, ok := want[k]; !ok {
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)
	for _, k := range keys {
		if got[k] != want[k] {
			t.Errorf("%s: overlay %q, containerd %q", k, got[k], want[k])
		}
	}
	if _, ok := want["b/y"]; !ok || len(want) < 6 {
		t.Fatalf("applied tree looks wrong: %v", want)
	}
}
