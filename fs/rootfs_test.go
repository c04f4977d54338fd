package fs_test

import (
	"os"
	"testing"

	"github.com/lazysnap/lazysnap/estargz"
	"github.com/lazysnap/lazysnap/fs/fetch"
	"github.com/lazysnap/lazysnap/internal/testenv"
	"github.com/lazysnap/lazysnap/internal/testtar"
)

// TestMountDebianRootfs mounts a real Debian root filesystem (make rootfs)
// and compares every file's metadata and content with the source tar.
func TestMountDebianRootfs(t *testing.T) {
	path := os.Getenv("LAZYSNAP_ROOTFS_TAR")
	if path == "" {
		path = "/var/tmp/lazysnap-rootfs/bookworm.tar"
	}
	tarball := testenv.ReadFile(t, path, "make rootfs")
	src, err := testtar.Read(tarball)
	if err != nil {
		t.Fatal(err)
	}
	l, blob := layerOf(t, tarball, fetch.Options{Name: "debian", NoPrefetch: true, NoBackground: true}, estargz.WithPrioritizedFiles([]string{"bin/sh"}))
	mnt, _ := mount(t, l)
	compareMount(t, mnt, src)
	st := l.Stats()
	t.Logf("%d entries; read everything: %d requests, %d of %d blob bytes", len(src), st.Requests, blob.bytes.Load(), len(blob.data))
	if st.ChunksPresent != st.Chunks {
		t.Errorf("after reading every file %d of %d chunks are present", st.ChunksPresent, st.Chunks)
	}
}
