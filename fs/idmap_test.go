package fs_test

import (
	"archive/tar"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
	"testing"

	ctrdmount "github.com/containerd/containerd/v2/core/mount"
	"github.com/lazysnap/lazysnap/fs/fetch"
	"github.com/lazysnap/lazysnap/internal/testenv"
)

// TestIDMappedMounts: a mounted layer can be cloned into idmapped mounts,
// as containerd does to the lower dirs of a user-namespaced container's
// overlay (containerd's own core/mount code makes them here). Each clone
// shows the layer's owners shifted by its map, two clones with different
// maps at once; the layer itself keeps the image's owners, and the chunks
// are fetched once for all of them: nothing is copied.
func TestIDMappedMounts(t *testing.T) {
	tarball := tarOf(t,
		tar.Header{Typeflag: tar.TypeDir, Name: "etc/"},
		tar.Header{Typeflag: tar.TypeReg, Name: "etc/shadow", Mode: 0o600},
		tar.Header{Typeflag: tar.TypeReg, Name: "home/user/notes", Mode: 0o640, Uid: 1000, Gid: 1001},
		tar.Header{Typeflag: tar.TypeSymlink, Name: "etc/link", Linkname: "shadow", Uid: 7, Gid: 8},
	)
	l, blob := layerOf(t, tarball, fetch.Options{NoPrefetch: true, NoBackground: true})
	mnt, m := mount(t, l)
	if !m.IDMappable() {
		testenv.Unavailable(t, "the kernel refused FUSE_ALLOW_IDMAP (Linux 6.12 or later has it)")
	}
	owners := map[string][2]uint32{"etc/shadow": {0, 0}, "home/user/notes": {1000, 1001}, "etc/link": {7, 8}, "etc": {0, 0}}
	var requests int64
	for i, base := range []uint32{100000, 200000} {
		target := t.TempDir()
		ns, err := ctrdmount.GetUsernsFD(fmt.Sprintf("0:%d:65536", base), fmt.Sprintf("0:%d:65536", base))
		if err != nil {
			t.Fatal(err)
		}
		err = ctrdmount.IDMapMount(mnt, target, int(ns.Fd()))
		ns.Close()
		if err != nil {
			t.Fatalf("idmapped mount of a lazysnap layer: %v", err)
		}
		t.Cleanup(func() { syscall.Unmount(target, syscall.MNT_DETACH) })
		for name, o := range owners {
			var st syscall.Stat_t
			if err := syscall.Lstat(filepath.Join(target, name), &st); err != nil {
				t.Fatal(err)
			}
			if st.Uid != base+o[0] || st.Gid != base+o[1] {
				t.Errorf("map %d: %s owned by %d:%d, want %d:%d", base, name, st.Uid, st.Gid, base+o[0], base+o[1])
			}
		}
		for _, name := range []string{"etc/shadow", "home/user/notes"} {
			if b, err := os.ReadFile(filepath.Join(target, name)); err != nil || string(b) != "content of "+name {
				t.Fatalf("map %d: read %s: %q, %v", base, name, b, err)
			}
		}
		if i == 0 {
			requests = blob.requests.Load()
		} else if n := blob.requests.Load(); n != requests {
			t.Errorf("reading through a second map made %d more requests: the content is not shared", n-requests)
		}
	}
	for name, o := range owners {
		var st syscall.Stat_t
		if err := syscall.Lstat(filepath.Join(mnt, name), &st); err != nil || st.Uid != o[0] || st.Gid != o[1] {
			t.Errorf("layer itself: %s owned by %d:%d (%v), want the image's %d:%d", name, st.Uid, st.Gid, err, o[0], o[1])
		}
	}
}
