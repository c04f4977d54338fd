package snapshotter_test

import (
	"path/filepath"
	"testing"

	"github.com/containerd/containerd/v2/core/metadata"
	"github.com/containerd/containerd/v2/core/snapshots"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	"github.com/containerd/containerd/v2/plugins/content/local"
	"github.com/containerd/errdefs"
	bolt "go.etcd.io/bbolt"

	"github.com/lazysnap/lazysnap/snapshotter"
)

// TestThroughContainerdMetadata puts the snapshotter behind containerd's
// metadata store, the layer the daemon (and so a proxy plugin) answers
// clients through: it namespaces keys, filters labels, and on
// ErrAlreadyExists looks the target up with a label and parent filter on
// Walk. Two namespaces pull the same image; the second gets the first's
// remote snapshot without a second mount.
func TestThroughContainerdMetadata(t *testing.T) {
	requireRoot(t)
	ctx, _ := testCtx(t)
	fs := newFakeFS()
	d1, d2 := digestOf("m1"), digestOf("m2")
	fs.fail[d2] = snapshotter.ReasonNotLazy
	sn, _ := newSnapshotter(t, ctx, fs, snapshotter.WithUnmountOnClose())

	dir := t.TempDir()
	bdb, err := bolt.Open(filepath.Join(dir, "meta.db"), 0o644, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { bdb.Close() })
	cs, err := local.NewStore(filepath.Join(dir, "content"))
	if err != nil {
		t.Fatal(err)
	}
	db := metadata.NewDB(bdb, cs, map[string]snapshots.Snapshotter{"lazysnap": sn})
	if err := db.Init(ctx); err != nil {
		t.Fatal(err)
	}
	msn := db.Snapshotter("lazysnap")

	for _, ns := range []string{"first", "second"} {
		ctx := namespaces.WithNamespace(ctx, ns)
		labels := layerLabels("chain1", d1)
		labels["not-inherited"] = "dropped by containerd"
		if _, err := msn.Prepare(ctx, "extract-1 chain1", "", snapshots.WithLabels(labels)); !errdefs.IsAlreadyExists(err) {
			t.Fatalf("%s: Prepare: %v, want AlreadyExists", ns, err)
		}
		info, err := msn.Stat(ctx, "chain1")
		if err != nil {
			t.Fatalf("%s: Stat(chain1): %v", ns, err)
		}
		if info.Kind != snapshots.KindCommitted || info.Labels[snapshotter.LabelRemote] != snapshotter.RemoteValue {
			t.Errorf("%s: Stat(chain1) = %+v", ns, info)
		}
		// The second layer falls back: the client unpacks and commits.
		if _, err := msn.Prepare(ctx, "extract-2 chain2", "chain1", snapshots.WithLabels(layerLabels("chain2", d2))); err != nil {
			t.Fatalf("%s: fallback Prepare: %v", ns, err)
		}
		if err := msn.Commit(ctx, "chain2", "extract-2 chain2", snapshots.WithLabels(layerLabels("chain2", d2))); err != nil {
			t.Fatalf("%s: Commit: %v", ns, err)
		}
		ms, err := msn.Prepare(ctx, "container", "chain2")
		if err != nil {
			t.Fatal(err)
		}
		if got := lowerdirs(t, ms); len(got) != 2 || got[1] != fsMountpoint(t, fs, d1) {
			t.Errorf("%s: lowerdir = %v", ns, got)
		}
	}
	calls := fs.Calls("Mount")
	if len(calls) != 3 { // chain1 once, chain2 (failing) per namespace
		t.Errorf("Mount calls = %d, want 3", len(calls))
	}
	if _, ok := calls[0].Labels["not-inherited"]; ok {
		t.Error("a label containerd filters reached Mount")
	}
	if st := sn.Stats(); st.RemoteMounts != 1 || st.Fallbacks[snapshotter.ReasonNotLazy] != 2 {
		t.Errorf("Stats = %+v", st)
	}
}
