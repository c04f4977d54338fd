package snapshotter_test

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"syscall"
	"testing"

	"github.com/containerd/containerd/v2/core/mount"
	"github.com/containerd/containerd/v2/core/snapshots"
	"github.com/containerd/errdefs"

	"github.com/lazysnap/lazysnap/snapshotter"
)

// idLabels are the labels containerd 2 puts on a user-namespaced
// container's snapshot (WithRemapperLabels: its root is host base).
func idLabels(uidmap, gidmap string) snapshots.Opt {
	return snapshots.WithLabels(map[string]string{snapshots.LabelSnapshotUIDMapping: uidmap, snapshots.LabelSnapshotGIDMapping: gidmap})
}

// TestIDMappedContainer: a container snapshot labelled with ID maps over
// an ordinary (fallback) layer and a remote one gets containerd's overlay
// options uidmap= and gidmap= (from Prepare and Mounts), its upper dir's
// root belongs to the container's root, and mounted by containerd's own
// mount code (as the shim mounts a rootfs) both layers show their owners
// through the map, while the layers themselves keep the image's.
func TestIDMappedContainer(t *testing.T) {
	requireRoot(t)
	ctx, _ := testCtx(t)
	sn, fs, lazy := mixedLayers(t, ctx, func(root string) {
		if err := os.WriteFile(filepath.Join(root, "secret"), []byte("root only"), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(root, "user"), []byte("user's"), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Lchown(filepath.Join(root, "user"), 1000, 1001); err != nil {
			t.Fatal(err)
		}
	})

	const base = 100000
	ms, mapped := prepareMapped(t, ctx, sn, "c2")
	if !mapped {
		t.Fatalf("mounts %+v carry no uidmap/gidmap", ms)
	}
	rootfs := mountAt(t, ms)
	for name, want := range map[string][2]uint32{".": {base, base}, "secret": {base, base}, "user": {base + 1000, base + 1001}, "lazy": {base, base}} {
		var st syscall.Stat_t
		if err := syscall.Lstat(filepath.Join(rootfs, name), &st); err != nil {
			t.Fatal(err)
		}
		if st.Uid != want[0] || st.Gid != want[1] {
			t.Errorf("%s owned by %d:%d in the container's rootfs, want %d:%d", name, st.Uid, st.Gid, want[0], want[1])
		}
	}
	if got := readFile(t, filepath.Join(rootfs, "lazy")); got != "from FUSE" {
		t.Errorf("lazy file reads %q", got)
	}
	var st syscall.Stat_t
	if err := syscall.Lstat(filepath.Join(fsMountpoint(t, fs, lazy), "lazy"), &st); err != nil || st.Uid != 0 {
		t.Errorf("the remote layer itself: owner %d, %v; want the image's 0", st.Uid, err)
	}
}

// TestIDMappingLabels: maps containerd cannot use, or that do not map the
// container's root, are refused as invalid arguments before anything is
// created; usable ones, several ranges too, are passed on as they are.
func TestIDMappingLabels(t *testing.T) {
	requireRoot(t)
	ctx, _ := testCtx(t)
	sn, _ := newSnapshotter(t, ctx, newFakeFS())
	for _, tc := range []struct {
		name           string
		uidmap, gidmap string
		ok             bool
	}{
		{"one range", "0:100000:65536", "0:100000:65536", true},
		{"ranges", "0:100000:1,1:200000:1000", "0:300000:65536", true},
		{"uid map only", "0:100000:65536", "", false},
		{"no root", "1:100000:65536", "0:100000:65536", false},
		{"not a number", "0:x:65536", "0:100000:65536", false},
		{"sign", "0:+100000:65536", "0:100000:65536", false},
		{"two fields", "0:100000", "0:100000:65536", false},
		{"empty range", "0:100000:0", "0:100000:65536", false},
		{"past 2^32", "0:4294967295:2", "0:100000:65536", false},
		{"an option smuggled in", "0:100000:65536,lowerdir=/etc", "0:100000:65536", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			labels := map[string]string{snapshots.LabelSnapshotUIDMapping: tc.uidmap}
			if tc.gidmap != "" {
				labels[snapshots.LabelSnapshotGIDMapping] = tc.gidmap
			}
			ms, err := sn.Prepare(ctx, tc.name, "", snapshots.WithLabels(labels))
			if !tc.ok {
				if !errdefs.IsInvalidArgument(err) {
					t.Fatalf("Prepare: %v, want invalid argument", err)
				}
				if _, err := sn.Stat(ctx, tc.name); !errdefs.IsNotFound(err) {
					t.Fatalf("a refused Prepare left snapshot behind: %v", err)
				}
				return
			}
			if err != nil || !slices.Contains(ms[0].Options, "uidmap="+tc.uidmap) || !slices.Contains(ms[0].Options, "gidmap="+tc.gidmap) {
				t.Fatalf("Prepare: %+v, %v", ms, err)
			}
		})
	}
}

// TestIDMappingOverChownedCopy: without the remap-ids capability containerd
// copies the image into a snapshot chowned through the map (its root owned
// by the container's root) and still labels the container's snapshot over
// it with the maps: its lower dirs are then not mapped again.
func TestIDMappingOverChownedCopy(t *testing.T) {
	requireRoot(t)
	ctx, _ := testCtx(t)
	sn, _ := newSnapshotter(t, ctx, newFakeFS())
	ms, err := sn.Prepare(ctx, "remapped-remap", "")
	if err != nil {
		t.Fatal(err)
	}
	root := mountAt(t, ms)
	if err := os.Lchown(root, 100000, 100000); err != nil {
		t.Fatal(err)
	}
	mount.UnmountAll(root, 0)
	if err := sn.Commit(ctx, "remapped", "remapped-remap"); err != nil {
		t.Fatal(err)
	}
	if ms, mapped := prepareMapped(t, ctx, sn, "remapped"); mapped {
		t.Fatalf("mounts over an already chowned copy map it again: %+v", ms)
	}
}

// prepareMapped prepares the snapshot "container" over parent with the
// labels of a container whose root is host 100000, and reports whether its
// mounts, from Prepare and again from Mounts, carry the maps.
func prepareMapped(t *testing.T, ctx context.Context, sn *snapshotter.Snapshotter, parent string) ([]mount.Mount, bool) {
	t.Helper()
	ms, err := sn.Prepare(ctx, "container", parent, idLabels("0:100000:65536", "0:100000:65536"))
	if err != nil {
		t.Fatal(err)
	}
	again, err := sn.Mounts(ctx, "container")
	if err != nil {
		t.Fatal(err)
	}
	mapped := func(ms []mount.Mount) bool {
		return len(ms) == 1 && slices.Contains(ms[0].Options, "uidmap=0:100000:65536") && slices.Contains(ms[0].Options, "gidmap=0:100000:65536")
	}
	if mapped(ms) != mapped(again) {
		t.Fatalf("Prepare's mounts %+v and Mounts' %+v differ", ms, again)
	}
	return ms, mapped(ms)
}
