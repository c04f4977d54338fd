package fs_test

import (
	"archive/tar"
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/lazysnap/lazysnap/fs/fetch"
	"github.com/lazysnap/lazysnap/internal/testenv"
	"golang.org/x/sys/unix"
)

// TestPassthroughUnderOverlay reads and executes fully fetched files (served
// by FUSE passthrough where the kernel has it) through an overlay mount, as
// a container does.
func TestPassthroughUnderOverlay(t *testing.T) {
	requireFUSE(t)
	bb := testenv.ReadFile(t, "/bin/busybox", "Debian busybox-static")
	tb := tarWith(t, map[string][]byte{"bin/busybox": bb})
	l, _ := layerOf(t, tb, fetch.Options{NoPrefetch: true, NoBackground: true})
	mnt, m := mount(t, l)
	// a long-lived open from before the file was complete (a running
	// program), then opens after it is: the kernel must not see a
	// passthrough open beside the cached one
	first, err := os.Open(filepath.Join(mnt, "bin/busybox"))
	if err != nil {
		t.Fatal(err)
	}
	defer first.Close()
	if _, err := first.Read(make([]byte, 4096)); err != nil {
		t.Fatal(err)
	}
	if _, err := os.ReadFile(filepath.Join(mnt, "bin/busybox")); err != nil {
		t.Fatal(err)
	}
	merged, upper, work := t.TempDir(), t.TempDir(), t.TempDir()
	if err := unix.Mount("overlay", merged, "overlay", 0, "lowerdir="+mnt+",upperdir="+upper+",workdir="+work); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if unix.Unmount(merged, 0) != nil {
			unix.Unmount(merged, unix.MNT_DETACH)
		}
	})
	for i := 0; i < 2; i++ {
		got, err := os.ReadFile(filepath.Join(merged, "bin/busybox"))
		if err != nil || len(got) != len(bb) {
			t.Fatalf("read %d through overlay: %v (passthrough %v)", i, err, m.Passthrough())
		}
		// map it as exec does (not exec itself: a process must not exec
		// from a FUSE mount it serves, or a fork child can deadlock it)
		if err := mmapCompare(filepath.Join(merged, "bin/busybox"), bb); err != nil {
			t.Fatalf("mmap %d through overlay: %v", i, err)
		}
	}
	first.Close()
	time.Sleep(50 * time.Millisecond) // the release reaches the daemon asynchronously
	if _, err := os.ReadFile(filepath.Join(mnt, "bin/busybox")); err != nil {
		t.Fatal(err)
	}
	if m.Passthrough() && l.Stats().PassthroughOpens == 0 {
		t.Errorf("no passthrough open once the cached-mode handles were closed")
	}
}

func tarWith(t *testing.T, files map[string][]byte) []byte {
	t.Helper()
	var b = new(bytes.Buffer)
	tw := tar.NewWriter(b)
	tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: "bin/", Mode: 0o755})
	for name, c := range files {
		tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: 0o755, Size: int64(len(c))})
		tw.Write(c)
	}
	tw.Close()
	return b.Bytes()
}

func mmapCompare(path string, want []byte) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	m, err := unix.Mmap(int(f.Fd()), 0, len(want), unix.PROT_READ|unix.PROT_EXEC, unix.MAP_PRIVATE)
	if err != nil {
		return err
	}
	defer unix.Munmap(m)
	if !bytes.Equal(m, want) {
		return fmt.Errorf("mapped content differs")
	}
	return nil
}
