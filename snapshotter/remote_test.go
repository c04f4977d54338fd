package snapshotter_test

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/containerd/containerd/v2/core/mount"
	"github.com/containerd/containerd/v2/core/snapshots"
	"github.com/containerd/errdefs"
	"github.com/sirupsen/logrus"

	"github.com/lazysnap/lazysnap/snapshotter"
)

// lowerdirs returns the lowerdir list of an overlay mount.
func lowerdirs(t *testing.T, ms []mount.Mount) []string {
	t.Helper()
	if len(ms) != 1 || ms[0].Type != "overlay" {
		t.Fatalf("want one overlay mount, got %+v", ms)
	}
	for _, o := range ms[0].Options {
		if v, ok := strings.CutPrefix(o, "lowerdir="); ok {
			return strings.Split(v, ":")
		}
	}
	t.Fatalf("no lowerdir in %+v", ms)
	return nil
}

// TestRemotePrepare drives the protocol as containerd's unpacker does for a
// two-layer image whose layers both mount remotely, then runs a container
// snapshot on top and reads the layers' files through the overlay.
func TestRemotePrepare(t *testing.T) {
	requireRoot(t)
	ctx, _ := testCtx(t)
	fs := newFakeFS()
	d1, d2 := digestOf("layer1"), digestOf("layer2")
	fs.files[d1] = map[string]string{"etc/os-release": "fake", "bin/sh": "shell v1"}
	fs.files[d2] = map[string]string{"bin/sh": "shell v2", "app/main": "app"}
	var lazyMounts atomic.Int64
	sn, _ := newSnapshotter(t, ctx, fs, snapshotter.WithUnmountOnClose(), snapshotter.WithOnMount(func(took time.Duration, lazy bool) {
		if lazy && took >= 0 {
			lazyMounts.Add(1)
		}
	}))

	l1 := layerLabels("chain1", d1)
	_, err := sn.Prepare(ctx, "extract-1 chain1", "", snapshots.WithLabels(l1))
	if !errdefs.IsAlreadyExists(err) {
		t.Fatalf("Prepare with target label: got %v, want AlreadyExists", err)
	}
	l2 := layerLabels("chain2", d2)
	l2[snapshotter.LabelStargzLayers] = d2
	if _, err := sn.Prepare(ctx, "extract-2 chain2", "chain1", snapshots.WithLabels(l2)); !errdefs.IsAlreadyExists(err) {
		t.Fatalf("Prepare of the second layer: got %v, want AlreadyExists", err)
	}
	if n := lazyMounts.Load(); n != 2 {
		t.Fatalf("WithOnMount reported %d lazy mounts, want 2", n)
	}

	// The committed snapshots carry the target names and the remote mark,
	// and the extraction keys are gone.
	for name, parent := range map[string]string{"chain1": "", "chain2": "chain1"} {
		info, err := sn.Stat(ctx, name)
		if err != nil {
			t.Fatalf("Stat(%s): %v", name, err)
		}
		if info.Kind != snapshots.KindCommitted || info.Parent != parent || info.Labels[snapshotter.LabelRemote] != snapshotter.RemoteValue {
			t.Errorf("Stat(%s) = %+v, want committed remote snapshot with parent %q", name, info, parent)
		}
	}
	for _, key := range []string{"extract-1 chain1", "extract-2 chain2"} {
		if _, err := sn.Stat(ctx, key); !errdefs.IsNotFound(err) {
			t.Errorf("Stat(%q) = %v, want NotFound", key, err)
		}
	}
	// Mount got every label the client sent.
	if got := fs.Calls("Mount"); len(got) != 2 || !maps.Equal(got[0].Labels, l1) || !maps.Equal(got[1].Labels, l2) {
		t.Errorf("Mount calls = %+v, want the Prepare labels", got)
	}
	mp1, mp2 := fsMountpoint(t, fs, d1), fsMountpoint(t, fs, d2)
	if !isMounted(t, mp1) || !isMounted(t, mp2) {
		t.Fatal("remote layers not mounted")
	}

	// Asking for an existing target again is answered without a mount.
	if _, err := sn.Prepare(ctx, "extract-3 chain1", "", snapshots.WithLabels(l1)); !errdefs.IsAlreadyExists(err) {
		t.Errorf("second Prepare of chain1: %v, want AlreadyExists", err)
	}
	if n := len(fs.Calls("Mount")); n != 2 {
		t.Errorf("Mount called %d times, want 2", n)
	}

	ms, err := sn.Prepare(ctx, "container", "chain2")
	if err != nil {
		t.Fatal(err)
	}
	if got, want := lowerdirs(t, ms), []string{mp2, mp1}; !slices.Equal(got, want) {
		t.Errorf("lowerdir = %v, want %v (remote mountpoints, top first)", got, want)
	}
	root := mountAt(t, ms)
	for path, want := range map[string]string{"etc/os-release": "fake", "bin/sh": "shell v2", "app/main": "app", "layer": "<open " + filepath.Join(root, "layer") + ": no such file or directory>"} {
		if got := readFile(t, filepath.Join(root, path)); got != want {
			t.Errorf("%s = %q, want %q", path, got, want)
		}
	}
	if err := os.WriteFile(filepath.Join(root, "bin/sh"), []byte("patched"), 0o755); err != nil {
		t.Errorf("write through overlay: %v", err)
	}
	if got := readFile(t, filepath.Join(mp2, "bin/sh")); got != "shell v2" {
		t.Errorf("remote layer changed by a write: %q", got)
	}

	// A view over a single remote layer is a read-only bind of it.
	vms, err := sn.View(ctx, "view", "chain1")
	if err != nil {
		t.Fatal(err)
	}
	if len(vms) != 1 || vms[0].Type != "bind" || vms[0].Source != mp1 || !slices.Contains(vms[0].Options, "ro") {
		t.Errorf("View mounts = %+v, want a ro bind of %s", vms, mp1)
	}

	if st := sn.Stats(); st.RemoteMounts != 2 || len(st.Fallbacks) != 0 || st.Unavailable != 0 {
		t.Errorf("Stats = %+v", st)
	}
}

// TestFallback checks that every way a remote mount can fail yields an
// ordinary active snapshot that is unpacked and committed as usual, logged
// and counted by reason.
func TestFallback(t *testing.T) {
	requireRoot(t)
	tests := []struct {
		name   string
		labels func(l map[string]string)
		fail   error
		block  bool
		want   snapshotter.Reason
		mounts int // Mount calls expected
	}{
		{name: "not eStargz", fail: fmt.Errorf("no eStargz footer: %w", snapshotter.ReasonNotLazy), want: snapshotter.ReasonNotLazy, mounts: 1},
		{name: "verification failed", fail: fmt.Errorf("TOC digest mismatch: %w", snapshotter.ReasonVerification), want: snapshotter.ReasonVerification, mounts: 1},
		{name: "reason of the FileSystem's own", fail: fmt.Errorf("registry said 401: %w", snapshotter.Reason("auth")), want: "auth", mounts: 1},
		{name: "unclassified error", fail: errors.New("boom"), want: snapshotter.ReasonMountError, mounts: 1},
		{name: "mount timeout", block: true, want: snapshotter.ReasonTimeout, mounts: 1},
		{name: "plain ctr pull labels", labels: func(l map[string]string) {
			for k := range l {
				if k != snapshotter.LabelTargetSnapshotRef {
					delete(l, k)
				}
			}
		}, want: snapshotter.ReasonMissingLabels},
		{name: "malformed digest", labels: func(l map[string]string) { l[snapshotter.LabelStargzDigest] = "sha256:nothex" }, want: snapshotter.ReasonInvalidLabels},
		{name: "garbage TOC digest", labels: func(l map[string]string) { l[snapshotter.LabelTOCDigest] = "not a digest" }, want: snapshotter.ReasonInvalidLabels},
		{name: "md5 TOC digest", labels: func(l map[string]string) { l[snapshotter.LabelTOCDigest] = "md5:d41d8cd98f00b204e9800998ecf8427e" }, want: snapshotter.ReasonInvalidLabels},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx, hook := testCtx(t)
			fs := newFakeFS()
			d := digestOf("plain layer")
			fs.fail[d], fs.block = tt.fail, tt.block
			var mounts []bool // WithOnMount's reports
			var mountsMu sync.Mutex
			sn, _ := newSnapshotter(t, ctx, fs, snapshotter.WithMountTimeout(100*time.Millisecond), snapshotter.WithOnMount(func(took time.Duration, lazy bool) {
				mountsMu.Lock()
				defer mountsMu.Unlock()
				mounts = append(mounts, lazy)
			}))
			labels := layerLabels("chainP", d)
			if tt.labels != nil {
				tt.labels(labels)
			}
			ms, err := sn.Prepare(ctx, "extract chainP", "", snapshots.WithLabels(labels))
			if err != nil {
				t.Fatalf("Prepare: %v, want a fallback", err)
			}
			if len(ms) != 1 || ms[0].Type != "bind" || !slices.Contains(ms[0].Options, "rw") {
				t.Fatalf("mounts = %+v, want rw bind of the active snapshot", ms)
			}
			if n := len(fs.Calls("Mount")); n != tt.mounts {
				t.Errorf("Mount called %d times, want %d", n, tt.mounts)
			}
			mountsMu.Lock()
			if len(mounts) != tt.mounts || slices.Contains(mounts, true) {
				t.Errorf("WithOnMount reported %v, want %d failed mounts", mounts, tt.mounts)
			}
			mountsMu.Unlock()
			if st := sn.Stats(); st.Fallbacks[tt.want] != 1 || st.RemoteMounts != 0 {
				t.Errorf("Stats = %+v, want one fallback %q", st, tt.want)
			}
			// every fallback is listed, whatever step refused it
			fbs := sn.Fallbacks()
			if len(fbs) != 1 || fbs[0].Reason != tt.want || fbs[0].Target != "chainP" || fbs[0].Digest != labels[snapshotter.LabelStargzDigest] ||
				fbs[0].Ref != labels[snapshotter.LabelStargzReference] || fbs[0].Err == "" {
				t.Errorf("Fallbacks = %+v, want the one with reason %q, its labels and error", fbs, tt.want)
			}
			var logged bool
			for _, e := range hook.AllEntries() {
				if e.Level <= logrus.InfoLevel && e.Data["reason"] == string(tt.want) && e.Data["target"] == "chainP" && e.Data[logrus.ErrorKey] != nil {
					logged = true
				}
			}
			if !logged {
				t.Errorf("no log entry with reason %q and the error", tt.want)
			}
			// The caller unpacks into the snapshot and commits it.
			root := mountAt(t, ms)
			if err := os.WriteFile(filepath.Join(root, "unpacked"), []byte("x"), 0o644); err != nil {
				t.Fatal(err)
			}
			mount.UnmountAll(root, 0)
			if err := sn.Commit(ctx, "chainP", "extract chainP", snapshots.WithLabels(labels)); err != nil {
				t.Fatal(err)
			}
			info, err := sn.Stat(ctx, "chainP")
			if err != nil || info.Kind != snapshots.KindCommitted || info.Labels[snapshotter.LabelRemote] != "" {
				t.Errorf("Stat(chainP) = %+v, %v, want an ordinary committed snapshot", info, err)
			}
		})
	}
}

// mixedLayers commits chain c1, an ordinary (fallback) layer whose files
// fill writes, and over it c2, a remote layer with the file "lazy".
func mixedLayers(t *testing.T, ctx context.Context, fill func(root string)) (*snapshotter.Snapshotter, *fakeFS, string) {
	t.Helper()
	fs := newFakeFS()
	plain, lazy := digestOf("plain"), digestOf("lazy")
	fs.fail[plain] = snapshotter.ReasonNotLazy
	fs.files[lazy] = map[string]string{"lazy": "from FUSE"}
	sn, _ := newSnapshotter(t, ctx, fs, snapshotter.WithUnmountOnClose())

	ms, err := sn.Prepare(ctx, "extract-1", "", snapshots.WithLabels(layerLabels("c1", plain)))
	if err != nil {
		t.Fatal(err)
	}
	root := mountAt(t, ms)
	fill(root)
	mount.UnmountAll(root, 0)
	if err := sn.Commit(ctx, "c1", "extract-1"); err != nil {
		t.Fatal(err)
	}
	if _, err := sn.Prepare(ctx, "extract-2", "c1", snapshots.WithLabels(layerLabels("c2", lazy))); !errdefs.IsAlreadyExists(err) {
		t.Fatalf("Prepare remote layer over a plain one: %v", err)
	}
	return sn, fs, lazy
}

// TestMixedLayers puts an ordinary (fallback) layer under a remote one.
func TestMixedLayers(t *testing.T) {
	requireRoot(t)
	ctx, _ := testCtx(t)
	sn, fs, lazy := mixedLayers(t, ctx, func(root string) {
		if err := os.WriteFile(filepath.Join(root, "plain"), []byte("unpacked"), 0o644); err != nil {
			t.Fatal(err)
		}
	})
	ms, err := sn.View(ctx, "v", "c2")
	if err != nil {
		t.Fatal(err)
	}
	if got := lowerdirs(t, ms); len(got) != 2 || got[0] != fsMountpoint(t, fs, lazy) {
		t.Errorf("lowerdir = %v", got)
	}
	root := mountAt(t, ms)
	if a, b := readFile(t, filepath.Join(root, "plain")), readFile(t, filepath.Join(root, "lazy")); a != "unpacked" || b != "from FUSE" {
		t.Errorf("view shows %q, %q", a, b)
	}
}

// TestRemoveRemote checks that removing a remote snapshot unmounts it
// through the FileSystem and removes its directory, and that a remote
// snapshot with children stays.
func TestRemoveRemote(t *testing.T) {
	requireRoot(t)
	ctx, _ := testCtx(t)
	fs := newFakeFS()
	d := digestOf("layer")
	sn, _ := newSnapshotter(t, ctx, fs, snapshotter.WithUnmountOnClose())
	if _, err := sn.Prepare(ctx, "extract", "", snapshots.WithLabels(layerLabels("c", d))); !errdefs.IsAlreadyExists(err) {
		t.Fatal(err)
	}
	mp := fsMountpoint(t, fs, d)
	if _, err := sn.Prepare(ctx, "child", "c"); err != nil {
		t.Fatal(err)
	}
	if err := sn.Remove(ctx, "c"); !errdefs.IsFailedPrecondition(err) {
		t.Errorf("Remove with a child: %v, want FailedPrecondition", err)
	}
	if len(fs.Calls("Unmount")) != 0 || !isMounted(t, mp) {
		t.Fatal("layer with a child unmounted")
	}
	if err := sn.Remove(ctx, "child"); err != nil {
		t.Fatal(err)
	}
	if err := sn.Remove(ctx, "c"); err != nil {
		t.Fatal(err)
	}
	if got := fs.Calls("Unmount"); len(got) != 1 || got[0].Mountpoint != mp {
		t.Errorf("Unmount calls = %+v, want one for %s", got, mp)
	}
	if _, err := os.Stat(filepath.Dir(mp)); !os.IsNotExist(err) {
		t.Errorf("snapshot directory left: %v", err)
	}
	if st := sn.Stats(); st.Unavailable != 0 {
		t.Errorf("Stats = %+v", st)
	}
}

// TestFallbackListForgetsMounted: a layer that falls back and later mounts
// remotely is no longer listed among the fallbacks; others stay.
func TestFallbackListForgetsMounted(t *testing.T) {
	requireRoot(t)
	ctx, _ := testCtx(t)
	fs := newFakeFS()
	flaky, bad := digestOf("flaky layer"), digestOf("bad layer")
	fs.fail[flaky] = fmt.Errorf("registry down: %w", snapshotter.ReasonMountError)
	fs.fail[bad] = fmt.Errorf("no footer: %w", snapshotter.ReasonNotLazy)
	sn, _ := newSnapshotter(t, ctx, fs)
	prepare := func(key, chain, d string) {
		t.Helper()
		if _, err := sn.Prepare(ctx, key, "", snapshots.WithLabels(layerLabels(chain, d))); err != nil {
			t.Fatalf("Prepare %s: %v, want a fallback", key, err)
		}
	}
	prepare("extract a", "chainA", flaky)
	prepare("extract b", "chainB", bad)
	if fbs := sn.Fallbacks(); len(fbs) != 2 || fbs[0].Digest != flaky || fbs[1].Digest != bad {
		t.Fatalf("Fallbacks = %+v, want the flaky then the bad layer", fbs)
	}
	fs.mu.Lock()
	delete(fs.fail, flaky)
	fs.mu.Unlock()
	if _, err := sn.Prepare(ctx, "extract a2", "", snapshots.WithLabels(layerLabels("chainA2", flaky))); !errdefs.IsAlreadyExists(err) {
		t.Fatalf("Prepare of the recovered layer: %v, want a remote snapshot (already exists)", err)
	}
	if fbs := sn.Fallbacks(); len(fbs) != 1 || fbs[0].Digest != bad || fbs[0].Reason != snapshotter.ReasonNotLazy {
		t.Fatalf("Fallbacks after the flaky layer mounted = %+v, want only the bad layer", fbs)
	}
}
