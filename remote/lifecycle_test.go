package remote

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/lazysnap/lazysnap/fetcher"
	"github.com/lazysnap/lazysnap/internal/testenv"
	"github.com/lazysnap/lazysnap/internal/testenv/registry"
	"github.com/lazysnap/lazysnap/profile"
	"github.com/lazysnap/lazysnap/snapshotter"
	"github.com/opencontainers/go-digest"
)

// settleGoroutines waits until no more than want goroutines run, polling
// (goroutines that were told to stop take a moment to return); after a
// minute it fails with their stacks.
func settleGoroutines(t *testing.T, want int) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for runtime.NumGoroutine() > want {
		if time.Now().After(deadline) {
			var b strings.Builder
			pprof.Lookup("goroutine").WriteTo(&b, 1)
			t.Fatalf("%d goroutines, want at most %d as before New:\n%s", runtime.NumGoroutine(), want, b.String())
		}
		runtime.Gosched()
		time.Sleep(time.Millisecond)
	}
}

// lifecycleFS is an FS with everything that starts goroutines on: read
// ahead of neighbouring layers, blob verification, profile recording.
func lifecycleFS(t *testing.T, f *fetcher.Fetcher) (*FS, *profile.Store) {
	t.Helper()
	root := t.TempDir()
	store := profile.NewStore(filepath.Join(root, "profiles"))
	return New(NewRegistrySource(f), Options{Root: root, VerifyBlob: true,
		Profiles: &ProfileOptions{Store: store, Limits: profile.Limits{Quiet: time.Hour, Total: time.Hour}}}), store
}

// TestCloseStopsGoroutines: Close stops every goroutine the FS started:
// mounted layers' FUSE servers, prefetch, background fetch and
// verification, and, with the registry holding every blob request, a
// Mount in progress and its read ahead of the layers above (which ran on
// for minutes before); the count returns to what it was before New. The
// layers still mounted are left as Detach leaves them, and Mount after
// Close fails with ErrClosed.
func TestCloseStopsGoroutines(t *testing.T) {
	testenv.NeedFUSE(t)
	r := registry.Start(t, registry.Options{})
	tr := http.DefaultTransport.(*http.Transport).Clone()
	wan := registry.StartWANProxy(t, r.URL(), registry.WANOptions{Transport: tr})
	hosts := t.TempDir()
	if _, err := registry.WriteHostsConfig(hosts, wan.Host, registry.Endpoint{URL: wan.URL}); err != nil {
		t.Fatal(err)
	}
	viaWAN := func(ref string) string { return wan.Host + strings.TrimPrefix(ref, r.Host) }
	refA, layersA := pushLazyImage(t, r, "lifecycle/a", 2)
	refB, layersB := pushLazyImage(t, r, "lifecycle/b", 3)
	refA, refB = viaWAN(refA), viaWAN(refB)
	ctx := context.Background()
	before := runtime.NumGoroutine()

	f, err := fetcher.New(fetcher.Config{HostsDir: hosts})
	if err != nil {
		t.Fatal(err)
	}
	rfs, _ := lifecycleFS(t, f)
	var mps []string
	t.Cleanup(func() {
		for _, mp := range mps {
			syscall.Unmount(mp, syscall.MNT_DETACH) // what Close left mounted
		}
	})
	for i := range layersA {
		mp := t.TempDir()
		if err := rfs.Mount(ctx, mp, layerLabels(refA, layersA, i)); err != nil {
			t.Fatal(err)
		}
		mps = append(mps, mp)
		if _, err := os.ReadFile(filepath.Join(mp, fmt.Sprintf("layer%d", i))); err != nil {
			t.Fatal(err)
		}
	}
	wan.SetFaults(registry.Faults{Delay: time.Hour})
	mounting := make(chan error, 1)
	mpB := t.TempDir()
	go func() { mounting <- rfs.Mount(ctx, mpB, layerLabels(refB, layersB, 0)) }()
	// image B's first two layers are image A's (mounted): its Mount reads
	// its blob again, and the third layer is read ahead
	for wan.Stats().Delayed < 2 {
		select {
		case err := <-mounting:
			t.Fatalf("Mount with the registry holding every request returned: %v", err)
		case <-time.After(time.Millisecond):
		}
	}
	during := runtime.NumGoroutine()
	if err := rfs.Close(); err != nil {
		t.Fatal(err)
	}
	if err := <-mounting; err == nil {
		t.Fatal("the Mount in progress at Close succeeded")
	}
	if err := rfs.Mount(ctx, t.TempDir(), layerLabels(refA, layersA, 0)); !errors.Is(err, ErrClosed) {
		t.Fatalf("Mount after Close: %v, want ErrClosed", err)
	}
	if n := len(rfs.Layers()); n != 0 {
		t.Fatalf("%d layers listed after Close", n)
	}
	f.Close() // its idle connections, and the proxy's
	tr.CloseIdleConnections()
	settleGoroutines(t, before)
	t.Logf("goroutines: %d before New, %d with two layers mounted and one mounting, %d after Close", before, during, runtime.NumGoroutine())
}

// TestImagesForgotten: the FS keeps an image's profile state while a
// layer of the image is mounted or being mounted, and forgets it when the
// last one unmounts (or fails to mount), ending its recording: the
// recording is stored then, not when it would have gone quiet.
func TestImagesForgotten(t *testing.T) {
	testenv.NeedFUSE(t)
	r, hosts := startRegistry(t)
	ref, layers := pushLazyImage(t, r, "lifecycle/two", 2)
	ctx := context.Background()
	f, err := fetcher.New(fetcher.Config{HostsDir: hosts})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	rfs, store := lifecycleFS(t, f)
	t.Cleanup(func() { rfs.Close() })
	images := func() int {
		rfs.mu.Lock()
		defer rfs.mu.Unlock()
		return len(rfs.images)
	}

	bad := layerLabels(ref, layers, 0)
	bad[snapshotter.LabelTOCDigest] = digest.FromString("another TOC").String()
	if err := rfs.Mount(ctx, t.TempDir(), bad); err == nil {
		t.Fatal("Mount with a wrong TOC digest succeeded")
	}
	if n := images(); n != 0 {
		t.Fatalf("after a failed Mount: %d images, want 0", n)
	}
	var mps []string
	for i := range layers {
		mp := t.TempDir()
		if err := rfs.Mount(ctx, mp, layerLabels(ref, layers, i)); err != nil {
			t.Fatal(err)
		}
		mps = append(mps, mp)
		if n := images(); n != 1 {
			t.Fatalf("with %d layers mounted: %d images, want 1", i+1, n)
		}
	}
	if _, err := os.ReadFile(filepath.Join(mps[1], "layer1")); err != nil {
		t.Fatal(err)
	}
	key := profile.Key("", ref)
	for i, mp := range mps {
		if err := rfs.Unmount(ctx, mp); err != nil {
			t.Fatal(err)
		}
		if n, want := images(), map[bool]int{true: 0, false: 1}[i == len(mps)-1]; n != want {
			t.Fatalf("after %d Unmounts: %d images, want %d", i+1, n, want)
		}
	}
	rfs.Close() // waits for the recording to be stored
	p, err := store.Get(key)
	if err != nil {
		t.Fatalf("the recording of the unmounted image was not stored: %v", err)
	}
	if len(p.Layers) != 1 || p.Layers[0].Digest != layers[1].Digest {
		t.Fatalf("stored profile %+v, want layer 1's read", p.Layers)
	}
}
