package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/lazysnap/lazysnap/config"
	"github.com/lazysnap/lazysnap/fetcher"
	"github.com/lazysnap/lazysnap/fusemanager"
	"github.com/lazysnap/lazysnap/ops"
	"github.com/lazysnap/lazysnap/remote"
	"github.com/lazysnap/lazysnap/snapshotter"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// testManager is a fuse manager's protocol served in this process over a
// real unix socket, for a layerService over src.
type testManager struct {
	sock string
	ls   *layerService
	srv  *http.Server
}

func newTestManager(t *testing.T, src remote.Source) *testManager {
	return newTestManagerWith(t, src, remote.Options{})
}

// newTestManagerWith is newTestManager with the layers' options (its Root
// is the manager's directory).
func newTestManagerWith(t *testing.T, src remote.Source, opts remote.Options) *testManager {
	t.Helper()
	dir, err := os.MkdirTemp("/tmp", "lzm-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	opts.Root = dir
	rfs := remote.New(src, opts)
	ls := &layerService{fs: rfs, root: dir, met: ops.NewMetrics("fuse-manager", version),
		status: &ops.Server{FS: rfs, Src: ops.Sources{Layers: rfs.Layers, BadLayers: rfs.BadLayers}}}
	if err := ls.met.Register(ls.status.Src); err != nil {
		t.Fatal(err)
	}
	m := &testManager{sock: filepath.Join(dir, config.ManagerSocketName), ls: ls}
	m.srv = &http.Server{Handler: ls.handler(dir)}
	t.Cleanup(func() { m.srv.Close() })
	return m
}

// serve starts listening.
func (m *testManager) serve(t *testing.T) {
	l, err := net.Listen("unix", m.sock)
	if err != nil {
		t.Error(err)
		return
	}
	go m.srv.Serve(l)
}

// blockingSource's manifest lookup blocks until its context ends, and
// reports that context's error on cancelled.
type blockingSource struct {
	failingSource
	cancelled chan error
}

func (s blockingSource) Layer(ctx context.Context, ref string, dg digest.Digest) (ocispec.Descriptor, error) {
	<-ctx.Done()
	s.cancelled <- ctx.Err()
	return ocispec.Descriptor{}, ctx.Err()
}

func labelsFor(dg digest.Digest) map[string]string {
	return map[string]string{snapshotter.LabelCRIImageRef: "reg.example/app:1", snapshotter.LabelCRILayerDigest: dg.String()}
}

// TestManagerProtocol: serve's FileSystem through a fuse manager behaves as
// the one in-process: a failed Mount's Reason survives the trip (the
// snapshotter counts fallbacks by it), unknown mountpoints fail Check and
// Usage, and a cancelled caller cancels the manager's Mount.
func TestManagerProtocol(t *testing.T) {
	notLazy := failingSource{desc: &ocispec.Descriptor{MediaType: ocispec.MediaTypeImageLayerGzip, Digest: digest.Digest(hexDigest('a'))}}
	m := newTestManager(t, notLazy)
	m.serve(t)
	fs := fusemanager.NewFS(fusemanager.NewClient(m.sock), nil)
	ctx := context.Background()
	mp := t.TempDir()
	for _, tc := range []struct {
		name   string
		labels map[string]string
		reason snapshotter.Reason
	}{
		{"no source labels", map[string]string{}, snapshotter.ReasonMissingLabels},
		{"bad digest label", map[string]string{snapshotter.LabelCRIImageRef: "r/a:1", snapshotter.LabelCRILayerDigest: "sha256:zz"}, snapshotter.ReasonInvalidLabels},
		{"layer without a TOC digest", labelsFor(digest.Digest(hexDigest('a'))), snapshotter.ReasonNotLazy},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := fs.Mount(ctx, mp, tc.labels)
			var r snapshotter.Reason
			if !errors.As(err, &r) || r != tc.reason {
				t.Fatalf("Mount: %v (reason %q), want reason %q", err, r, tc.reason)
			}
		})
	}
	if err := fs.Check(ctx, mp, nil); err == nil || !strings.Contains(err.Error(), "no layer mounted") {
		t.Fatalf("Check of an unknown mountpoint: %v", err)
	}
	if _, err := fs.Usage(ctx, mp); err == nil {
		t.Fatal("Usage of an unknown mountpoint succeeded")
	}
	if err := fs.Unmount(ctx, mp); err != nil {
		t.Fatalf("Unmount of a mountpoint with nothing mounted: %v", err)
	}
	if err := fs.Mount(ctx, "", nil); err == nil || !strings.Contains(err.Error(), "bad request") {
		t.Fatalf("Mount without a mountpoint: %v", err)
	}

	t.Run("cancelled caller", func(t *testing.T) {
		bs := blockingSource{cancelled: make(chan error, 1)}
		bm := newTestManager(t, bs)
		bm.serve(t)
		bfs := fusemanager.NewFS(fusemanager.NewClient(bm.sock), nil)
		mctx, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
		defer cancel()
		if err := bfs.Mount(mctx, t.TempDir(), labelsFor(digest.Digest(hexDigest('b')))); !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("Mount past its deadline: %v", err)
		}
		select {
		case err := <-bs.cancelled:
			if !errors.Is(err, context.Canceled) {
				t.Fatalf("the manager's Mount ended with %v", err)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("the manager's Mount was not cancelled with its caller")
		}
	})
}

// TestManagerStart: with no manager listening, the first calls start one
// (once, however many callers) and go through; a manager that exits at
// start fails the call with a pointer to its log instead of a long wait.
func TestManagerStart(t *testing.T) {
	m := newTestManager(t, failingSource{})
	var starts atomic.Int32
	fs := fusemanager.NewFS(fusemanager.NewClient(m.sock), func() (<-chan error, error) {
		starts.Add(1)
		time.AfterFunc(50*time.Millisecond, func() { m.serve(t) })
		return make(chan error), nil
	})
	var wg sync.WaitGroup
	errs := make([]error, 8)
	for i := range errs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = fs.Check(context.Background(), fmt.Sprintf("/nowhere/%d", i), nil)
		}()
	}
	wg.Wait()
	for _, err := range errs {
		if err == nil || !strings.Contains(err.Error(), "no layer mounted") {
			t.Fatalf("Check through a started manager: %v", err)
		}
	}
	if n := starts.Load(); n != 1 {
		t.Fatalf("%d managers started, want 1", n)
	}

	dead := fusemanager.NewFS(fusemanager.NewClient(filepath.Join(t.TempDir(), config.ManagerSocketName)), func() (<-chan error, error) {
		exited := make(chan error, 1)
		exited <- errors.New("exit status 1")
		return exited, nil
	})
	err := dead.Check(context.Background(), "/nowhere", nil)
	if err == nil || !strings.Contains(err.Error(), "exit status 1") || !fusemanager.NotListening(err) {
		t.Fatalf("Check with a manager that exits at start: %v", err)
	}
}

// TestClaimSocket: a second manager refuses a socket a live one serves; a
// stale socket file is replaced.
func TestClaimSocket(t *testing.T) {
	m := newTestManager(t, failingSource{})
	m.serve(t)
	if err := fusemanager.ClaimSocket(context.Background(), m.sock); err == nil || !strings.Contains(err.Error(), "already serves") {
		t.Fatalf("claim of a live manager's socket: %v", err)
	}
	m.srv.Close()
	if err := fusemanager.ClaimSocket(context.Background(), m.sock); err != nil {
		t.Fatalf("claim of a stale socket: %v", err)
	}
	if _, err := os.Stat(m.sock); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("stale socket left: %v", err)
	}
}

// TestManagerCleanup: Cleanup through the manager removes the content of
// layers that are not mounted (what is spared: remote's TestCleanupSpares).
func TestManagerCleanup(t *testing.T) {
	m := newTestManager(t, failingSource{})
	m.serve(t)
	content := filepath.Join(m.ls.root, "content")
	if err := os.MkdirAll(filepath.Join(content, "sha256-"+hexDigest('c')[7:]+".sha256-"+hexDigest('f')[7:], "files", "usr"), 0o700); err != nil {
		t.Fatal(err)
	}
	fs := fusemanager.NewFS(fusemanager.NewClient(m.sock), nil)
	if err := fs.Cleanup(context.Background()); err != nil {
		t.Fatal(err)
	}
	if ents, _ := os.ReadDir(content); len(ents) != 0 {
		t.Fatalf("content after Cleanup: %d entries, want none", len(ents))
	}
}

// TestManagerPullAuths: a CRI pull's auth reaches the manager's memory
// (POST /pullauth) and a failed pull's is reverted; a bad request's error
// quotes no secret; a manager without a store refuses auths.
func TestManagerPullAuths(t *testing.T) {
	m := newTestManager(t, failingSource{})
	m.ls.pullAuths = fetcher.NewPullAuths()
	m.srv.Handler = m.ls.handler(t.TempDir())
	m.serve(t)
	fs := fusemanager.NewFS(fusemanager.NewClient(m.sock), nil)
	ctx := context.Background()
	auth := fetcher.PullAuth{Username: "alice", Password: "s3cret-pw"}
	gen, err := fs.SetPullAuth(ctx, "reg.example:5000/team/app:v1", auth)
	if err != nil {
		t.Fatal(err)
	}
	if got := m.ls.pullAuths.Repositories(); len(got) != 1 || got[0] != "reg.example:5000/team/app" {
		t.Fatalf("the manager holds auths for %q", got)
	}
	user, pass, ok, err := m.ls.pullAuths.Credentials(ctx, "reg.example:5000/team/app@"+hexDigest('b'), "reg.example:5000", false)
	if err != nil || !ok || user != "alice" || pass != "s3cret-pw" {
		t.Fatalf("credentials in the manager: %q %q %v %v", user, pass, ok, err)
	}
	if err := fs.RevertPullAuth(ctx, "reg.example:5000/team/app:v1", gen); err != nil {
		t.Fatal(err)
	}
	if got := m.ls.pullAuths.Repositories(); len(got) != 0 {
		t.Fatalf("after the revert the manager holds auths for %q", got)
	}
	for _, bad := range []struct{ image, auth string }{{"reg.example/App:v1", ""}, {"reg.example/app:v1", "%%%s3cret-pw"}} {
		_, err := fs.SetPullAuth(ctx, bad.image, fetcher.PullAuth{Auth: bad.auth, Password: "s3cret-pw"})
		if err == nil || strings.Contains(err.Error(), "s3cret-pw") {
			t.Fatalf("bad pull auth %q: %v", bad.image, err)
		}
	}

	none := newTestManager(t, failingSource{})
	none.serve(t)
	_, err = fusemanager.NewFS(fusemanager.NewClient(none.sock), nil).SetPullAuth(ctx, "reg.example/app:v1", auth)
	if err == nil || !strings.Contains(err.Error(), "keeps no pull auths") {
		t.Fatalf("a manager without a store: %v", err)
	}
}
