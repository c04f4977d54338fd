package snapshotter_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"

	"github.com/containerd/containerd/v2/core/mount"
	"github.com/containerd/containerd/v2/core/snapshots"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	"github.com/containerd/log"
	"github.com/lazysnap/lazysnap/internal/testenv"
	"github.com/moby/sys/mountinfo"
	"github.com/opencontainers/go-digest"
	"github.com/sirupsen/logrus"
	logtest "github.com/sirupsen/logrus/hooks/test"
	"golang.org/x/sys/unix"

	"github.com/lazysnap/lazysnap/snapshotter"
)

// requireRoot skips (or fails under testenv.RequireEnv) when the test
// cannot mount.
func requireRoot(t *testing.T) {
	t.Helper()
	testenv.NeedRoot(t, "overlay and tmpfs mounts")
}

// fsCall is one call a fakeFS received.
type fsCall struct {
	Op         string // Mount, Check, Unmount
	Mountpoint string
	Labels     map[string]string
}

// fakeFS is a FileSystem that mounts a read-only tmpfs holding the files of
// the layer its labels name. Like an in-process FUSE server it only knows
// the mounts it made itself.
type fakeFS struct {
	mu       sync.Mutex
	calls    []fsCall
	mounted  map[string]bool
	files    map[string]map[string]string // layer digest → path → content
	fail     map[string]error             // layer digest → Mount error
	checkErr error
	block    bool // Mount waits for its context to end
}

func newFakeFS() *fakeFS {
	return &fakeFS{mounted: map[string]bool{}, files: map[string]map[string]string{}, fail: map[string]error{}}
}

func (f *fakeFS) record(op, mp string, labels map[string]string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var l map[string]string
	if labels != nil {
		l = map[string]string{}
		for k, v := range labels {
			l[k] = v
		}
	}
	f.calls = append(f.calls, fsCall{op, mp, l})
}

// Calls returns the calls of one kind ("" for all).
func (f *fakeFS) Calls(op string) []fsCall {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []fsCall
	for _, c := range f.calls {
		if op == "" || c.Op == op {
			out = append(out, c)
		}
	}
	return out
}

func (f *fakeFS) Mount(ctx context.Context, mp string, labels map[string]string) error {
	f.record("Mount", mp, labels)
	src, err := snapshotter.ParseLayerSource(labels)
	if err != nil {
		return err
	}
	f.mu.Lock()
	ferr, files, block := f.fail[src.Digest.String()], f.files[src.Digest.String()], f.block
	f.mu.Unlock()
	if block {
		<-ctx.Done()
		return fmt.Errorf("fake mount: %w", ctx.Err())
	}
	if ferr != nil {
		return ferr
	}
	if files == nil {
		files = map[string]string{"layer": src.Digest.String()}
	}
	if err := unix.Mount("lazysnap-fake", mp, "tmpfs", 0, "size=4m,mode=755"); err != nil {
		return fmt.Errorf("fake mount: %w", err)
	}
	for p, content := range files {
		full := filepath.Join(mp, p)
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err == nil {
			err = os.WriteFile(full, []byte(content), 0o644)
		}
		if err != nil {
			unix.Unmount(mp, 0)
			return fmt.Errorf("fake mount: %w", err)
		}
	}
	if err := unix.Mount("", mp, "", unix.MS_REMOUNT|unix.MS_RDONLY, ""); err != nil {
		unix.Unmount(mp, 0)
		return fmt.Errorf("fake mount: %w", err)
	}
	f.mu.Lock()
	f.mounted[mp] = true
	f.mu.Unlock()
	return nil
}

func (f *fakeFS) Check(ctx context.Context, mp string, labels map[string]string) error {
	f.record("Check", mp, labels)
	f.mu.Lock()
	known, cerr := f.mounted[mp], f.checkErr
	f.mu.Unlock()
	if cerr != nil {
		return cerr
	}
	if !known {
		return fmt.Errorf("fake check: %s not mounted by this FileSystem", mp)
	}
	if ok, err := mountinfo.Mounted(mp); err != nil || !ok {
		return fmt.Errorf("fake check: %s: mount gone", mp)
	}
	return nil
}

func (f *fakeFS) Unmount(ctx context.Context, mp string) error {
	f.record("Unmount", mp, nil)
	f.mu.Lock()
	known := f.mounted[mp]
	delete(f.mounted, mp)
	f.mu.Unlock()
	if !known {
		return fmt.Errorf("fake unmount: %s not mounted by this FileSystem", mp)
	}
	return unix.Unmount(mp, 0)
}

var _ snapshotter.Cleaner = (*fakeFS)(nil)

// Cleanup records the call.
func (f *fakeFS) Cleanup(ctx context.Context) error {
	f.record("Cleanup", "", nil)
	return nil
}

// usageFS is a fakeFS that is also a Usager.
type usageFS struct {
	*fakeFS
	usage snapshots.Usage
}

func (u usageFS) Usage(ctx context.Context, mp string) (snapshots.Usage, error) {
	return u.usage, nil
}

// testCtx is a namespaced context whose log entries land in the returned hook.
func testCtx(t *testing.T) (context.Context, *logtest.Hook) {
	logger, hook := logtest.NewNullLogger()
	logger.SetLevel(logrus.DebugLevel)
	ctx := log.WithLogger(context.Background(), logrus.NewEntry(logger))
	return namespaces.WithNamespace(ctx, "test"), hook
}

// newSnapshotter opens a Snapshotter in a fresh root; the test's cleanup
// closes it and unmounts whatever is left under root.
func newSnapshotter(t *testing.T, ctx context.Context, fs snapshotter.FileSystem, opts ...snapshotter.Opt) (*snapshotter.Snapshotter, string) {
	t.Helper()
	root := t.TempDir()
	sn, err := snapshotter.New(ctx, root, fs, opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		sn.Close()
		unmountAll(t, root)
	})
	return sn, root
}

// unmountAll detaches every mount below dir.
func unmountAll(t *testing.T, dir string) {
	real, err := filepath.EvalSymlinks(dir)
	if err != nil {
		return
	}
	ms, _ := mountinfo.GetMounts(mountinfo.PrefixFilter(real))
	slices.SortFunc(ms, func(a, b *mountinfo.Info) int { return len(b.Mountpoint) - len(a.Mountpoint) })
	for _, m := range ms {
		if err := unix.Unmount(m.Mountpoint, unix.MNT_DETACH); err != nil {
			t.Errorf("unmount %s: %v", m.Mountpoint, err)
		}
	}
}

// isMounted reports whether something is mounted on mp.
func isMounted(t *testing.T, mp string) bool {
	t.Helper()
	ok, err := mountinfo.Mounted(mp)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		t.Fatal(err)
	}
	return ok
}

// mountAt mounts ms on a fresh directory and returns it; the test's cleanup
// unmounts it.
func mountAt(t *testing.T, ms []mount.Mount) string {
	t.Helper()
	target := t.TempDir()
	if err := mount.All(ms, target); err != nil {
		t.Fatalf("mount %+v: %v", ms, err)
	}
	t.Cleanup(func() {
		if err := mount.UnmountAll(target, unix.MNT_DETACH); err != nil {
			t.Errorf("unmount %s: %v", target, err)
		}
	})
	return target
}

// readFile returns a file's content, or "<error>" text.
func readFile(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		return "<" + err.Error() + ">"
	}
	return string(b)
}

// layerLabels are the labels `ctr-remote image rpull` sends for a layer.
func layerLabels(chainID, layerDigest string) map[string]string {
	return map[string]string{
		snapshotter.LabelTargetSnapshotRef: chainID,
		snapshotter.LabelStargzReference:   "registry.test/app:latest",
		snapshotter.LabelStargzDigest:      layerDigest,
		snapshotter.LabelStargzLayers:      layerDigest,
		snapshotter.LabelStargzPrefetch:    "10485760",
		snapshotter.LabelTOCDigest:         digestOf("toc of " + layerDigest),
	}
}

// digestOf makes a valid sha256 digest string from a seed.
func digestOf(seed string) string {
	return digest.FromString(seed).String()
}

// fsMountpoint returns the mountpoint of the single Mount call for layer.
func fsMountpoint(t *testing.T, f *fakeFS, layerDigest string) string {
	t.Helper()
	var mps []string
	for _, c := range f.Calls("Mount") {
		if c.Labels[snapshotter.LabelStargzDigest] == layerDigest || c.Labels[snapshotter.LabelCRILayerDigest] == layerDigest {
			mps = append(mps, c.Mountpoint)
		}
	}
	if len(mps) == 0 {
		t.Fatalf("no Mount call for %s", layerDigest)
	}
	return mps[len(mps)-1]
}
