package snapshotter_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/containerd/containerd/v2/core/mount"
	"github.com/containerd/containerd/v2/core/snapshots"
	"github.com/containerd/errdefs"
	"golang.org/x/sys/unix"

	"github.com/lazysnap/lazysnap/snapshotter"
)

// TestErrorCategories checks the errdefs category of each API error.
func TestErrorCategories(t *testing.T) {
	requireRoot(t)
	ctx, _ := testCtx(t)
	sn, _ := newSnapshotter(t, ctx, newFakeFS())
	if _, err := sn.Prepare(ctx, "active", ""); err != nil {
		t.Fatal(err)
	}
	if _, err := sn.View(ctx, "view", ""); err != nil {
		t.Fatal(err)
	}
	if _, err := sn.Prepare(ctx, "to-commit", ""); err != nil {
		t.Fatal(err)
	}
	if err := sn.Commit(ctx, "committed", "to-commit"); err != nil {
		t.Fatal(err)
	}
	if _, err := sn.Prepare(ctx, "child", "committed"); err != nil {
		t.Fatal(err)
	}
	badOpt := func(*snapshots.Info) error { return errors.New("bad option") }
	tests := []struct {
		name string
		call func() error
		is   func(error) bool
	}{
		{"Prepare with a missing parent", func() error { _, err := sn.Prepare(ctx, "x", "nope"); return err }, errdefs.IsNotFound},
		{"Prepare over an active parent", func() error { _, err := sn.Prepare(ctx, "x", "active"); return err }, errdefs.IsInvalidArgument},
		{"Prepare of an existing key", func() error { _, err := sn.Prepare(ctx, "active", ""); return err }, errdefs.IsAlreadyExists},
		{"Prepare with a failing option", func() error { _, err := sn.Prepare(ctx, "x", "", badOpt); return err }, errdefs.IsInvalidArgument},
		{"View of an existing key", func() error { _, err := sn.View(ctx, "view", ""); return err }, errdefs.IsAlreadyExists},
		{"Stat of a missing key", func() error { _, err := sn.Stat(ctx, "nope"); return err }, errdefs.IsNotFound},
		{"Usage of a missing key", func() error { _, err := sn.Usage(ctx, "nope"); return err }, errdefs.IsNotFound},
		{"Mounts of a missing key", func() error { _, err := sn.Mounts(ctx, "nope"); return err }, errdefs.IsNotFound},
		{"Mounts of a committed snapshot", func() error { _, err := sn.Mounts(ctx, "committed"); return err }, errdefs.IsFailedPrecondition},
		{"Commit of a view", func() error { return sn.Commit(ctx, "c2", "view") }, errdefs.IsFailedPrecondition},
		{"Commit onto an existing name", func() error { return sn.Commit(ctx, "committed", "active") }, errdefs.IsAlreadyExists},
		{"Commit of a missing key", func() error { return sn.Commit(ctx, "c3", "nope") }, errdefs.IsNotFound},
		{"Remove with a child", func() error { return sn.Remove(ctx, "committed") }, errdefs.IsFailedPrecondition},
		{"Remove of a missing key", func() error { return sn.Remove(ctx, "nope") }, errdefs.IsNotFound},
		{"Update of a missing key", func() error { _, err := sn.Update(ctx, snapshots.Info{Name: "nope"}); return err }, errdefs.IsNotFound},
		{"New without a FileSystem", func() error { _, err := snapshotter.New(ctx, t.TempDir(), nil); return err }, errdefs.IsInvalidArgument},
		{"New on a root overlay cannot name", func() error {
			_, err := snapshotter.New(ctx, filepath.Join(t.TempDir(), "a,b"), newFakeFS())
			return err
		}, errdefs.IsInvalidArgument},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := tt.call(); !tt.is(err) {
				t.Errorf("got %v", err)
			}
		})
	}
}

// TestUsage checks that usage is measured: the upper dir of an active
// snapshot, the recorded size of a committed one, and what a Usager
// FileSystem says of a remote one.
func TestUsage(t *testing.T) {
	requireRoot(t)
	ctx, _ := testCtx(t)
	fs := usageFS{fakeFS: newFakeFS(), usage: snapshots.Usage{Inodes: 7, Size: 12345}}
	sn, _ := newSnapshotter(t, ctx, fs, snapshotter.WithUnmountOnClose())
	ms, err := sn.Prepare(ctx, "active", "")
	if err != nil {
		t.Fatal(err)
	}
	root := mountAt(t, ms)
	if err := os.WriteFile(filepath.Join(root, "blob"), make([]byte, 1<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	mount.UnmountAll(root, 0)
	if _, err := sn.Prepare(ctx, "extract", "", snapshots.WithLabels(layerLabels("remote", digestOf("r")))); !errdefs.IsAlreadyExists(err) {
		t.Fatal(err)
	}
	check := func(key string, minSize int64, inodes int64) {
		t.Helper()
		u, err := sn.Usage(ctx, key)
		if err != nil {
			t.Fatal(err)
		}
		if u.Size < minSize || u.Size > minSize+64<<10 || (inodes > 0 && u.Inodes != inodes) {
			t.Errorf("Usage(%s) = %+v, want about %d bytes", key, u, minSize)
		}
	}
	check("active", 1<<20, 0)
	if err := sn.Commit(ctx, "committed", "active"); err != nil {
		t.Fatal(err)
	}
	check("committed", 1<<20, 0)
	check("remote", 12345, 7)
}

// TestUpdateKeepsSourceLabels checks that an update replacing all labels of
// a remote snapshot cannot drop what restore needs.
func TestUpdateKeepsSourceLabels(t *testing.T) {
	requireRoot(t)
	ctx, _ := testCtx(t)
	sn, _ := newSnapshotter(t, ctx, newFakeFS(), snapshotter.WithUnmountOnClose())
	labels := layerLabels("remote", digestOf("u"))
	if _, err := sn.Prepare(ctx, "extract", "", snapshots.WithLabels(labels)); !errdefs.IsAlreadyExists(err) {
		t.Fatal(err)
	}
	info, err := sn.Update(ctx, snapshots.Info{Name: "remote", Labels: map[string]string{"containerd.io/gc.root": "x"}}, "labels")
	if err != nil {
		t.Fatal(err)
	}
	want := withLabel(labels, snapshotter.LabelRemote, snapshotter.RemoteValue, "containerd.io/gc.root", "x")
	if !equalLabels(info.Labels, want) {
		t.Errorf("labels after update = %v, want %v", info.Labels, want)
	}
	if st, _ := sn.Stat(ctx, "remote"); !equalLabels(st.Labels, want) {
		t.Errorf("stored labels = %v", st.Labels)
	}
	// Ordinary labels of an ordinary snapshot are replaced as asked.
	if _, err := sn.Prepare(ctx, "a", "", snapshots.WithLabels(map[string]string{"k": "v"})); err != nil {
		t.Fatal(err)
	}
	if info, err := sn.Update(ctx, snapshots.Info{Name: "a", Labels: map[string]string{"k2": "v2"}}, "labels"); err != nil || !equalLabels(info.Labels, map[string]string{"k2": "v2"}) {
		t.Errorf("Update = %v, %v", info.Labels, err)
	}
}

// TestCleanup checks that Cleanup removes only directories no snapshot
// uses, detaching anything left mounted in them first, then lets the
// FileSystem free what unmounted layers left (Cleaner).
func TestCleanup(t *testing.T) {
	requireRoot(t)
	ctx, _ := testCtx(t)
	fs := newFakeFS()
	sn, root := newSnapshotter(t, ctx, fs, snapshotter.WithUnmountOnClose())
	if _, err := sn.Prepare(ctx, "kept", ""); err != nil {
		t.Fatal(err)
	}
	if _, err := sn.Prepare(ctx, "extract", "", snapshots.WithLabels(layerLabels("remote", digestOf("c")))); !errdefs.IsAlreadyExists(err) {
		t.Fatal(err)
	}
	snaps := filepath.Join(root, "snapshots")
	before, _ := os.ReadDir(snaps)
	orphans := []string{"999", "new-12345", "1000"}
	for _, o := range orphans {
		if err := os.MkdirAll(filepath.Join(snaps, o, "fs", "sub"), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	// An orphan that is still a mountpoint, as a crash between unmount
	// and removal would leave it.
	stale := filepath.Join(snaps, "1000", "fs")
	if err := unix.Mount("orphan", stale, "tmpfs", 0, "size=1m"); err != nil {
		t.Fatal(err)
	}
	var cleaner snapshots.Cleaner = sn // as containerd's GC finds it
	if err := cleaner.Cleanup(ctx); err != nil {
		t.Fatal(err)
	}
	after, _ := os.ReadDir(snaps)
	if fmt.Sprint(names(after)) != fmt.Sprint(names(before)) {
		t.Errorf("snapshot dirs after Cleanup = %v, want %v", names(after), names(before))
	}
	if isMounted(t, stale) {
		t.Error("orphan mount left")
	}
	if len(fs.Calls("Unmount")) != 0 {
		t.Error("Cleanup unmounted a remote snapshot in use")
	}
	if n := len(fs.Calls("Cleanup")); n != 1 {
		t.Errorf("the FileSystem's Cleanup called %d times, want once", n)
	}
	for _, key := range []string{"kept", "remote"} {
		if _, err := sn.Stat(ctx, key); err != nil {
			t.Errorf("Stat(%s) after Cleanup: %v", key, err)
		}
	}
}

// TestCleanupDuringPrepare: containerd's garbage collection calls Cleanup
// while a pull prepares snapshots; no snapshot created meanwhile loses its
// directory (Cleanup once listed the directories after its metadata scan,
// and removed one committed in between: Prepare then failed with "lchown
// .../fs: no such file or directory").
func TestCleanupDuringPrepare(t *testing.T) {
	ctx, _ := testCtx(t)
	sn, _ := newSnapshotter(t, ctx, newFakeFS())
	done := make(chan struct{})
	cleanups := make(chan error, 1)
	go func() {
		defer close(cleanups)
		for {
			select {
			case <-done:
				return
			default:
			}
			if err := sn.Cleanup(ctx); err != nil {
				cleanups <- err
				return
			}
		}
	}()
	parent := ""
	for i := range 100 {
		key := fmt.Sprintf("active-%d", i)
		if _, err := sn.Prepare(ctx, key, parent); err != nil {
			close(done)
			t.Fatalf("Prepare %s during Cleanup: %v", key, err)
		}
		name := fmt.Sprintf("layer-%d", i)
		if err := sn.Commit(ctx, name, key); err != nil {
			close(done)
			t.Fatalf("Commit %s during Cleanup: %v", name, err)
		}
		parent = name
	}
	close(done)
	if err := <-cleanups; err != nil {
		t.Fatal(err)
	}
}

func names(ents []os.DirEntry) []string {
	var out []string
	for _, e := range ents {
		out = append(out, e.Name())
	}
	return out
}

// TestConcurrentPrepare races Prepares of the same remote target (as two
// namespaces pulling one image do) and of different layers.
func TestConcurrentPrepare(t *testing.T) {
	requireRoot(t)
	ctx, _ := testCtx(t)
	fs := newFakeFS()
	sn, root := newSnapshotter(t, ctx, fs, snapshotter.WithUnmountOnClose())
	const n = 8
	var wg sync.WaitGroup
	errs := make([]error, 2*n)
	for i := range n {
		wg.Add(2)
		go func() {
			defer wg.Done()
			_, errs[i] = sn.Prepare(ctx, fmt.Sprintf("extract-same-%d", i), "", snapshots.WithLabels(layerLabels("same", digestOf("same"))))
		}()
		go func() {
			defer wg.Done()
			chain := fmt.Sprintf("chain-%d", i)
			_, errs[n+i] = sn.Prepare(ctx, "extract-"+chain, "", snapshots.WithLabels(layerLabels(chain, digestOf(chain))))
		}()
	}
	wg.Wait()
	for i, err := range errs {
		if !errdefs.IsAlreadyExists(err) {
			t.Errorf("Prepare %d: %v, want AlreadyExists", i, err)
		}
	}
	var snaps []string
	sn.Walk(ctx, func(ctx context.Context, info snapshots.Info) error {
		snaps = append(snaps, info.Name)
		if info.Kind != snapshots.KindCommitted || info.Labels[snapshotter.LabelRemote] == "" {
			t.Errorf("left over snapshot %+v", info)
		}
		return nil
	})
	if len(snaps) != n+1 {
		t.Errorf("snapshots = %v, want %d", snaps, n+1)
	}
	if err := sn.Cleanup(ctx); err != nil {
		t.Fatal(err)
	}
	dirs, _ := os.ReadDir(filepath.Join(root, "snapshots"))
	if len(dirs) != n+1 {
		t.Errorf("snapshot dirs = %v", names(dirs))
	}
	if st := sn.Stats(); st.RemoteMounts != n+1 || st.Unavailable != 0 {
		t.Errorf("Stats = %+v", st)
	}
	// Every loser of the race was unmounted.
	mounted := 0
	for _, c := range fs.Calls("Mount") {
		if isMounted(t, c.Mountpoint) {
			mounted++
		}
	}
	if mounted != n+1 {
		t.Errorf("%d mounts left, want %d", mounted, n+1)
	}
}

// TestParseLayerSource checks which labels a LayerSource comes from.
func TestParseLayerSource(t *testing.T) {
	d1, d2, toc, man := digestOf("1"), digestOf("2"), digestOf("toc"), digestOf("manifest")
	tests := []struct {
		name    string
		labels  map[string]string
		want    string // fmt of the LayerSource fields that matter
		wantErr snapshotter.Reason
	}{
		{
			name: "ctr-remote rpull",
			labels: map[string]string{
				snapshotter.LabelTargetSnapshotRef: "sha256:chain",
				snapshotter.LabelStargzReference:   "reg/app:1",
				snapshotter.LabelStargzDigest:      d1,
				snapshotter.LabelStargzLayers:      d1 + "," + d2,
				snapshotter.LabelStargzPrefetch:    "10485760",
				snapshotter.LabelRemoteURLs:        "",
				snapshotter.LabelTOCDigest:         toc,
				snapshotter.LabelTailSize:          "411426",
			},
			want: fmt.Sprintf("reg/app:1 %s toc=%s tail=411426 layers=[%s %s] prefetch=10485760 chain=sha256:chain", d1, toc, d1, d2),
		},
		{
			name: "CRI plugin",
			labels: map[string]string{
				snapshotter.LabelCRIImageRef:       "docker.io/library/app:1",
				snapshotter.LabelCRILayerDigest:    d2,
				snapshotter.LabelCRIImageLayers:    d2,
				snapshotter.LabelCRIManifestDigest: man,
			},
			want: fmt.Sprintf("docker.io/library/app:1 %s manifest=%s layers=[%s] prefetch=-1", d2, man, d2),
		},
		{
			name: "both: CRI first",
			labels: map[string]string{
				snapshotter.LabelCRIImageRef:      "cri/ref",
				snapshotter.LabelCRILayerDigest:   d1,
				snapshotter.LabelStargzReference:  "stargz/ref",
				snapshotter.LabelStargzDigest:     d2,
				snapshotter.LabelStargzSkipVerify: "true",
				snapshotter.LabelRemoteURLs:       "https://a/b,https://c/d",
			},
			want: fmt.Sprintf("cri/ref %s prefetch=-1 skipverify urls=[https://a/b https://c/d]", d1),
		},
		{
			name:   "CRI reference without its digest: Stargz labels",
			labels: map[string]string{snapshotter.LabelCRIImageRef: "cri/ref", snapshotter.LabelStargzReference: "s/ref", snapshotter.LabelStargzDigest: d2},
			want:   fmt.Sprintf("s/ref %s prefetch=-1", d2),
		},
		{name: "target only", labels: map[string]string{snapshotter.LabelTargetSnapshotRef: "c"}, wantErr: snapshotter.ReasonMissingLabels},
		{name: "no digest", labels: map[string]string{snapshotter.LabelStargzReference: "r"}, wantErr: snapshotter.ReasonMissingLabels},
		{name: "bad digest", labels: map[string]string{snapshotter.LabelStargzReference: "r", snapshotter.LabelStargzDigest: "md5:x"}, wantErr: snapshotter.ReasonInvalidLabels},
		{name: "bad TOC digest", labels: map[string]string{snapshotter.LabelStargzReference: "r", snapshotter.LabelStargzDigest: d1, snapshotter.LabelTOCDigest: "x"}, wantErr: snapshotter.ReasonInvalidLabels},
		{name: "md5 TOC digest", labels: map[string]string{snapshotter.LabelStargzReference: "r", snapshotter.LabelStargzDigest: d1, snapshotter.LabelTOCDigest: "md5:d41d8cd98f00b204e9800998ecf8427e"}, wantErr: snapshotter.ReasonInvalidLabels},
		{name: "empty TOC digest", labels: map[string]string{snapshotter.LabelStargzReference: "r", snapshotter.LabelStargzDigest: d1, snapshotter.LabelTOCDigest: ""}, wantErr: snapshotter.ReasonInvalidLabels},
		{name: "upper-case TOC digest", labels: map[string]string{snapshotter.LabelStargzReference: "r", snapshotter.LabelStargzDigest: d1, snapshotter.LabelTOCDigest: strings.ToUpper(toc)}, wantErr: snapshotter.ReasonInvalidLabels},
		{name: "CRI layer digest with a path", labels: map[string]string{snapshotter.LabelCRIImageRef: "r", snapshotter.LabelCRILayerDigest: "sha256:../../x"}, wantErr: snapshotter.ReasonInvalidLabels},
		{name: "bad layers", labels: map[string]string{snapshotter.LabelStargzReference: "r", snapshotter.LabelStargzDigest: d1, snapshotter.LabelStargzLayers: d1 + ",x"}, wantErr: snapshotter.ReasonInvalidLabels},
		{name: "bad prefetch", labels: map[string]string{snapshotter.LabelStargzReference: "r", snapshotter.LabelStargzDigest: d1, snapshotter.LabelStargzPrefetch: "-5"}, wantErr: snapshotter.ReasonInvalidLabels},
		{name: "bad tail size", labels: map[string]string{snapshotter.LabelStargzReference: "r", snapshotter.LabelStargzDigest: d1, snapshotter.LabelTailSize: "0"}, wantErr: snapshotter.ReasonInvalidLabels},
		{name: "bad skipverify", labels: map[string]string{snapshotter.LabelStargzReference: "r", snapshotter.LabelStargzDigest: d1, snapshotter.LabelStargzSkipVerify: "maybe"}, wantErr: snapshotter.ReasonInvalidLabels},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			src, err := snapshotter.ParseLayerSource(tt.labels)
			if tt.wantErr != "" {
				if !errors.Is(err, tt.wantErr) || !errdefs.IsInvalidArgument(err) {
					t.Fatalf("err = %v, want %q and InvalidArgument", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got := describe(src); got != tt.want {
				t.Errorf("got  %s\nwant %s", got, tt.want)
			}
		})
	}
}

func describe(s snapshotter.LayerSource) string {
	parts := []string{s.Ref, s.Digest.String()}
	if s.TOCDigest != "" {
		parts = append(parts, "toc="+s.TOCDigest.String())
	}
	if s.TailSize != 0 {
		parts = append(parts, fmt.Sprintf("tail=%d", s.TailSize))
	}
	if s.Manifest != "" {
		parts = append(parts, "manifest="+s.Manifest.String())
	}
	if len(s.Layers) > 0 {
		parts = append(parts, fmt.Sprintf("layers=%v", s.Layers))
	}
	parts = append(parts, fmt.Sprintf("prefetch=%d", s.PrefetchSize))
	if s.SkipVerify {
		parts = append(parts, "skipverify")
	}
	if len(s.URLs) > 0 {
		parts = append(parts, fmt.Sprintf("urls=%v", s.URLs))
	}
	if s.ChainID != "" {
		parts = append(parts, "chain="+s.ChainID)
	}
	return strings.Join(parts, " ")
}

// TestEmptyStore checks Walk and Cleanup on a store without snapshots.
func TestEmptyStore(t *testing.T) {
	requireRoot(t)
	ctx, _ := testCtx(t)
	sn, root := newSnapshotter(t, ctx, newFakeFS())
	if err := sn.Walk(ctx, func(context.Context, snapshots.Info) error {
		t.Error("Walk found a snapshot")
		return nil
	}); err != nil {
		t.Errorf("Walk: %v", err)
	}
	orphan := filepath.Join(root, "snapshots", "new-1")
	if err := os.MkdirAll(orphan, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := sn.Cleanup(ctx); err != nil {
		t.Errorf("Cleanup: %v", err)
	}
	if _, err := os.Stat(orphan); !os.IsNotExist(err) {
		t.Errorf("orphan left: %v", err)
	}
}
