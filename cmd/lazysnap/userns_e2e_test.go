package main

import (
	"archive/tar"
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	ctrdenv "github.com/lazysnap/lazysnap/internal/testenv/containerd"
)

// TestUserNamespace: containerd 2.4 runs a user-namespaced container (ctr
// run --uidmap --gidmap --remap-labels, as the CRI plugin runs a pod with
// hostUsers: false) on a lazy image and on the same image pulled the
// ordinary way (fallback layers). The container's root (host 100000) reads
// a root-only file of the image and sees the image's owners through its
// map, its own root owning root's files. With the proxy plugin's
// "remap-ids" capability the lazy layers are idmapped, not copied: the big
// file the container never reads stays unfetched, containerd makes no
// chowned copy of the image, and the layer's mount still shows the image's
// owners. Without the capability containerd's chowned copy works too (and
// reads every file: the whole layer is fetched).
func TestUserNamespace(t *testing.T) {
	t.Setenv(ctrdenv.BinDirEnv, ctrdenv.Containerd2Dir(t))
	gzipDir, esgzDir := buildLayouts(t, append(busyboxLayers(t, "userns"), ownersLayer(t))...)
	for _, tc := range []struct {
		name         string
		capabilities []string
		copied       bool
	}{
		{"remap-ids", []string{"remap-ids"}, false},
		{"no capability: containerd copies", nil, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := startStackWith(t, "[fetch]\n  no_background = true\n", stackOptions{capabilities: tc.capabilities})
			// the container's root (host 100000) must reach its rootfs
			// under containerd's state dir, as under /run/containerd
			// (0711): the test's containerd lives in a temp dir (0700)
			if err := os.Chmod(filepath.Dir(s.ctrd.Address()), 0o711); err != nil {
				t.Fatal(err)
			}
			lazyRef, _ := s.pushLayout(t, esgzDir, "userns", "esgz")
			plainRef, _ := s.pushLayout(t, gzipDir, "userns", "gzip")
			if out := s.pull(t, lazyRef); !strings.Contains(out, "3 of 3 layers lazy") {
				t.Fatalf("pull: %s", out)
			}
			if out := s.pull(t, plainRef); !strings.Contains(out, "0 of 3 layers lazy") {
				t.Fatalf("pull: %s", out)
			}
			// busybox ls -ln: MODE LINKS UID GID SIZE ...
			script := "cat /owners/secret && echo x > /written && for f in /owners/secret /owners/mine /written; do ls -ln $f; done | while read m l u g r; do echo $u:$g; done"
			want := "root's secret\n0:0\n1000:1001\n0:0\n"
			for _, ref := range []string{lazyRef, plainRef} {
				id := "userns-" + ref[strings.LastIndexByte(ref, ':')+1:]
				got := s.ctr(t, "run", "--rm", "--snapshotter", "lazysnap", "--uidmap", "0:100000:65536", "--gidmap", "0:100000:65536", "--remap-labels", ref, id, "/bin/sh", "-c", script)
				if got != want {
					t.Errorf("%s: a user-namespaced container printed %q, want %q\nlazysnap log:\n%s", ref, got, want, s.log())
				}
			}
			// the image's 6 layers, and a chowned copy of each image run
			if n := strings.Count(s.ctr(t, "snapshots", "--snapshotter", "lazysnap", "ls"), "Committed"); (n > 6) != tc.copied {
				t.Errorf("%d committed snapshots for 6 layers: copied %v, want %v", n, n > 6, tc.copied)
			}
			var fetched int64
			secret := ""
			for _, img := range s.status(t).Images {
				for _, l := range img.Layers {
					if img.Ref != lazyRef {
						continue
					}
					fetched += l.FetchedBytes
					if p := filepath.Join(l.Mountpoint, "owners", "secret"); l.Mountpoint != "" && fileExists(p) {
						secret = p
					}
				}
			}
			t.Logf("%s: the lazy image's layers fetched %d bytes", tc.name, fetched)
			if !tc.copied && fetched > 8<<20 {
				t.Errorf("%d bytes fetched for a container that read a few small files", fetched)
			}
			var st syscall.Stat_t
			if err := syscall.Stat(secret, &st); err != nil || st.Uid != 0 || st.Gid != 0 {
				t.Errorf("the lazy layer's own mount: %s owned by %d:%d (%v), want the image's 0:0", secret, st.Uid, st.Gid, err)
			}
		})
	}
}

// ownersLayer is a layer of files with owners: owners/secret, root's and
// readable by root only, and owners/mine, 1000:1001's.
func ownersLayer(t *testing.T) []byte {
	t.Helper()
	var b bytes.Buffer
	tw := tar.NewWriter(&b)
	mt := time.Unix(1700000000, 0)
	tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: "owners/", Mode: 0o755, ModTime: mt})
	for _, f := range []struct {
		name     string
		mode     int64
		uid, gid int
		content  string
	}{
		{"owners/secret", 0o600, 0, 0, "root's secret\n"},
		{"owners/mine", 0o600, 1000, 1001, "a user's file\n"},
	} {
		tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: f.name, Mode: f.mode, Uid: f.uid, Gid: f.gid, Size: int64(len(f.content)), ModTime: mt})
		tw.Write([]byte(f.content))
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}
