package snapshotter_test

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"testing"

	"github.com/containerd/containerd/v2/core/snapshots"
	"github.com/containerd/errdefs"
	"github.com/lazysnap/lazysnap/internal/testenv"
	"golang.org/x/sys/unix"

	"github.com/lazysnap/lazysnap/snapshotter"
)

// TestRestart closes a snapshotter holding a remote layer and opens a new
// one over the same root, as a restart of `lazysnap serve` does.
func TestRestart(t *testing.T) {
	requireRoot(t)
	tests := []struct {
		name        string
		closeOpts   []snapshotter.Opt // options of the first snapshotter
		sameFS      bool              // the FileSystem survives the restart
		failRestore bool              // the FileSystem cannot mount the layer at New
		dead        bool              // a dead FUSE mount is left on the mountpoint
		wantOps     []string          // calls of the second FileSystem during New
		want        snapshotter.Stats
	}{
		{
			name:      "unmounted on close: mounted again",
			closeOpts: []snapshotter.Opt{snapshotter.WithUnmountOnClose()},
			wantOps:   []string{"Mount"},
			want:      snapshotter.Stats{Restored: 1},
		},
		{
			name:    "left mounted and still served: kept",
			sameFS:  true,
			wantOps: []string{"Check"},
			want:    snapshotter.Stats{Restored: 1},
		},
		{
			name:    "left mounted by a FileSystem that is gone: replaced",
			wantOps: []string{"Check", "Unmount", "Mount"},
			want:    snapshotter.Stats{Restored: 1},
		},
		{
			name:      "left dead by a FUSE server that exited: replaced",
			closeOpts: []snapshotter.Opt{snapshotter.WithUnmountOnClose()},
			dead:      true,
			wantOps:   []string{"Unmount", "Mount"},
			want:      snapshotter.Stats{Restored: 1},
		},
		{
			name:        "mount fails at restore: unavailable until a child needs it",
			closeOpts:   []snapshotter.Opt{snapshotter.WithUnmountOnClose()},
			failRestore: true,
			wantOps:     []string{"Mount"},
			want:        snapshotter.Stats{RestoreFailures: 1, Unavailable: 1},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx, _ := testCtx(t)
			fs1 := newFakeFS()
			d := digestOf("restart layer")
			fs1.files[d] = map[string]string{"hello": "world"}
			root := t.TempDir()
			t.Cleanup(func() { unmountAll(t, root) })
			sn1, err := snapshotter.New(ctx, root, fs1, tt.closeOpts...)
			if err != nil {
				t.Fatal(err)
			}
			labels := layerLabels("chainR", d)
			if _, err := sn1.Prepare(ctx, "extract", "", snapshots.WithLabels(labels)); !errdefs.IsAlreadyExists(err) {
				t.Fatal(err)
			}
			mp := fsMountpoint(t, fs1, d)
			if err := sn1.Close(); err != nil {
				t.Fatal(err)
			}

			if tt.dead {
				deadFUSE(t, mp)
			}
			fs2 := fs1
			if !tt.sameFS {
				fs2 = newFakeFS()
				fs2.files = fs1.files
			}
			before := len(fs2.Calls(""))
			if tt.failRestore {
				fs2.fail[d] = errors.New("registry unreachable")
			}
			sn2, err := snapshotter.New(ctx, root, fs2, snapshotter.WithUnmountOnClose())
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { sn2.Close() })

			var ops []string
			for _, c := range fs2.Calls("")[before:] {
				if c.Mountpoint != mp {
					t.Errorf("call %s on %s, want %s", c.Op, c.Mountpoint, mp)
				}
				if c.Op == "Mount" || c.Op == "Check" {
					// Restore passes the labels stored on the committed
					// snapshot: the client's plus the remote mark.
					want := withLabel(labels, snapshotter.LabelRemote, snapshotter.RemoteValue)
					if !equalLabels(c.Labels, want) {
						t.Errorf("%s labels = %v, want %v", c.Op, c.Labels, want)
					}
				}
				ops = append(ops, c.Op)
			}
			if !slices.Equal(ops, tt.wantOps) {
				t.Errorf("FileSystem calls at New = %v, want %v", ops, tt.wantOps)
			}
			st := sn2.Stats()
			st.Fallbacks = nil
			if !reflect.DeepEqual(st, tt.want) {
				t.Errorf("Stats = %+v, want %+v", st, tt.want)
			}

			if tt.failRestore {
				// Pulling the image again does not pretend the layer is
				// there.
				if _, err := sn2.Prepare(ctx, "extract-again", "", snapshots.WithLabels(labels)); !errdefs.IsUnavailable(err) {
					t.Fatalf("Prepare of an unavailable target: %v, want Unavailable", err)
				}
				// A child needs the layer: still failing, it is refused
				// and nothing is left behind.
				if _, err := sn2.Prepare(ctx, "container", "chainR"); !errdefs.IsUnavailable(err) {
					t.Fatalf("Prepare over an unavailable layer: %v, want Unavailable", err)
				}
				if _, err := sn2.Stat(ctx, "container"); !errdefs.IsNotFound(err) {
					t.Errorf("refused snapshot left behind: %v", err)
				}
				fs2.mu.Lock()
				delete(fs2.fail, d)
				fs2.mu.Unlock()
			}
			ms, err := sn2.Prepare(ctx, "container", "chainR")
			if err != nil {
				t.Fatal(err)
			}
			if tt.failRestore {
				if st := sn2.Stats(); st.Remounts != 1 || st.Unavailable != 0 {
					t.Errorf("after recovery Stats = %+v", st)
				}
			}
			if got := readFile(t, filepath.Join(mountAt(t, ms), "hello")); got != "world" {
				t.Errorf("file of the restored layer = %q", got)
			}
		})
	}
}

// TestCheckBeforeMounts checks Mounts against the FileSystem's Check: an
// unhealthy live mount is Unavailable and left alone, a mount that vanished
// or died is mounted again.
func TestCheckBeforeMounts(t *testing.T) {
	requireRoot(t)
	tests := []struct {
		name    string
		breakIt func(t *testing.T, fs *fakeFS, mp string)
		want    func(error) bool
		mounts  int // Mount calls in all
	}{
		{name: "Check fails on a live mount", breakIt: func(t *testing.T, fs *fakeFS, mp string) {
			fs.checkErr = errors.New("registry unreachable")
		}, want: errdefs.IsUnavailable, mounts: 1},
		{name: "mount vanished", breakIt: func(t *testing.T, fs *fakeFS, mp string) {
			delete(fs.mounted, mp)
			if err := unix.Unmount(mp, 0); err != nil {
				t.Fatal(err)
			}
		}, mounts: 2},
		{name: "FUSE server died", breakIt: func(t *testing.T, fs *fakeFS, mp string) {
			delete(fs.mounted, mp)
			deadFUSE(t, mp) // stacked on the tmpfs
		}, mounts: 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx, _ := testCtx(t)
			fs := newFakeFS()
			d := digestOf("checked")
			sn, _ := newSnapshotter(t, ctx, fs, snapshotter.WithUnmountOnClose())
			if _, err := sn.Prepare(ctx, "extract", "", snapshots.WithLabels(layerLabels("c", d))); !errdefs.IsAlreadyExists(err) {
				t.Fatal(err)
			}
			mp := fsMountpoint(t, fs, d)
			if _, err := sn.Prepare(ctx, "container", "c"); err != nil {
				t.Fatal(err)
			}
			fs.mu.Lock()
			tt.breakIt(t, fs, mp)
			fs.mu.Unlock()

			ms, err := sn.Mounts(ctx, "container")
			if n := len(fs.Calls("Mount")); n != tt.mounts {
				t.Errorf("Mount calls = %d, want %d", n, tt.mounts)
			}
			if tt.want != nil {
				if !tt.want(err) {
					t.Errorf("Mounts: %v", err)
				}
				return
			}
			if err != nil {
				t.Fatalf("Mounts: %v", err)
			}
			if st := sn.Stats(); st.Remounts != 1 || st.Unavailable != 0 {
				t.Errorf("Stats = %+v", st)
			}
			if got := readFile(t, filepath.Join(mountAt(t, ms), "layer")); got != d {
				t.Errorf("layer file = %q", got)
			}
		})
	}
}

func withLabel(m map[string]string, kv ...string) map[string]string {
	out := map[string]string{}
	for k, v := range m {
		out[k] = v
	}
	for i := 0; i+1 < len(kv); i += 2 {
		out[kv[i]] = kv[i+1]
	}
	return out
}

func equalLabels(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return false
		}
	}
	return true
}

// TestRemoveUnavailable removes a remote snapshot that failed to restore:
// there is no mount to undo, and its directory goes.
func TestRemoveUnavailable(t *testing.T) {
	requireRoot(t)
	ctx, _ := testCtx(t)
	fs := newFakeFS()
	d := digestOf("gone")
	root := t.TempDir()
	t.Cleanup(func() { unmountAll(t, root) })
	sn1, err := snapshotter.New(ctx, root, fs, snapshotter.WithUnmountOnClose())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := sn1.Prepare(ctx, "extract", "", snapshots.WithLabels(layerLabels("c", d))); !errdefs.IsAlreadyExists(err) {
		t.Fatal(err)
	}
	mp := fsMountpoint(t, fs, d)
	sn1.Close()

	fs2 := newFakeFS()
	fs2.fail[d] = errors.New("registry unreachable")
	sn2, err := snapshotter.New(ctx, root, fs2)
	if err != nil {
		t.Fatal(err)
	}
	defer sn2.Close()
	if err := sn2.Remove(ctx, "c"); err != nil {
		t.Fatal(err)
	}
	if n := len(fs2.Calls("Unmount")); n != 0 {
		t.Errorf("Unmount called %d times for a layer that was not mounted", n)
	}
	if _, err := os.Stat(filepath.Dir(mp)); !os.IsNotExist(err) {
		t.Errorf("snapshot directory left: %v", err)
	}
	if st := sn2.Stats(); st.Unavailable != 0 || st.RestoreFailures != 1 {
		t.Errorf("Stats = %+v", st)
	}
}

// deadFUSE mounts on mp a FUSE filesystem whose server is gone, as a FUSE
// server that exited leaves it: every access fails with ENOTCONN.
func deadFUSE(t *testing.T, mp string) {
	t.Helper()
	fd, err := unix.Open("/dev/fuse", unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		testenv.Unavailable(t, "open /dev/fuse: %v", err)
	}
	opts := fmt.Sprintf("fd=%d,rootmode=40000,user_id=0,group_id=0", fd)
	err = unix.Mount("lazysnap-dead", mp, "fuse.lazysnap-dead", 0, opts)
	unix.Close(fd)
	if err != nil {
		t.Fatalf("mount dead FUSE: %v", err)
	}
	if _, err := os.Stat(mp); !errors.Is(err, unix.ENOTCONN) {
		t.Fatalf("dead FUSE mount answers stat with %v, want ENOTCONN", err)
	}
}
