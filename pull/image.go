package pull

import (
	"context"
	"fmt"
	"sync"
	"time"

	containerd "github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/core/images"
	"github.com/containerd/containerd/v2/core/remotes"
	"github.com/containerd/containerd/v2/pkg/snapshotters"
	"github.com/opencontainers/go-digest"
	"github.com/opencontainers/image-spec/identity"
)

// DefaultInterval is how often Image polls the progress when
// Options.Interval is zero (10 Hz).
const DefaultInterval = 100 * time.Millisecond

// Options are the settings of Image.
type Options struct {
	// Snapshotter is the name of the snapshotter to unpack into, as
	// containerd knows it (the proxy plugin's name); required.
	Snapshotter string
	// Resolver reaches the registry; nil is containerd's default.
	Resolver remotes.Resolver
	// Progress, when set, is called with the layers' progress every
	// Interval while the pull runs, and once more after it (unless ctx is
	// done). After it returns an error it is not called again; the pull
	// goes on and Image returns that error if the pull succeeds.
	Progress func([]Layer) error
	// Interval is how often Progress is called; 0 is DefaultInterval.
	Interval time.Duration
}

// Result is a pulled image.
type Result struct {
	Image containerd.Image
	Took  time.Duration // the pull's duration, unpacking included
	// DiffIDs are the image's layers (its config's rootfs), bottom first.
	DiffIDs []digest.Digest
	// Layers are the final states, one per DiffID: Digest and Size are
	// the manifest's (zero where it listed fewer layers), State is Lazy
	// for a remote snapshot, LineRate for a layer the snapshotter pulled
	// itself and Unpacked otherwise.
	Layers []Layer
}

// LineRateLayers is the number of layers the snapshotter pulled itself.
func (r Result) LineRateLayers() int { return r.count(LineRate) }

// LazyLayers is the number of layers mounted as remote snapshots.
func (r Result) LazyLayers() int { return r.count(Lazy) }

func (r Result) count(s State) int {
	n := 0
	for _, l := range r.Layers {
		if l.State == s {
			n++
		}
	}
	return n
}

// Image pulls ref through client, unpacking into opts.Snapshotter with the
// labels of containerd's CRI plugin on every layer, so that a remote
// snapshotter mounts the layers it can lazily. The image is stored under
// ref in client's namespace.
func Image(ctx context.Context, client *containerd.Client, ref string, opts Options) (Result, error) {
	if opts.Snapshotter == "" {
		return Result{}, fmt.Errorf("pulling %s: no snapshotter given", ref)
	}
	tracker := NewTracker()
	snaps := client.SnapshotService(opts.Snapshotter)
	popts := []containerd.RemoteOpt{
		containerd.WithPullUnpack,
		containerd.WithPullSnapshotter(opts.Snapshotter),
		containerd.WithImageHandlerWrapper(func(h images.Handler) images.Handler {
			// the labels containerd's CRI plugin sets: remote snapshotters
			// find the image and layer through them
			return tracker.Wrap(snapshotters.AppendInfoHandlerWrapper(ref)(h))
		}),
	}
	if opts.Resolver != nil {
		popts = append(popts, containerd.WithResolver(opts.Resolver))
	}
	poll := func() []Layer { return tracker.Poll(ctx, client.ContentStore(), snaps) }
	stop := report(ctx, opts.Progress, opts.Interval, poll)
	start := time.Now()
	img, err := client.Pull(ctx, ref, popts...)
	took := time.Since(start)
	if perr := stop(); err == nil && perr != nil {
		return Result{}, perr
	}
	if err != nil {
		return Result{}, fmt.Errorf("pulling %s: %w", ref, err)
	}
	diffIDs, err := img.RootFS(ctx)
	if err != nil {
		return Result{}, fmt.Errorf("reading the layers of %s: %w", img.Name(), err)
	}
	res := Result{Image: img, Took: took, DiffIDs: diffIDs, Layers: make([]Layer, len(diffIDs))}
	manifest := tracker.ManifestLayers()
	for i, id := range identity.ChainIDs(append([]digest.Digest(nil), diffIDs...)) {
		res.Layers[i].State = Unpacked
		if info, err := snaps.Stat(ctx, id.String()); err == nil {
			res.Layers[i].State = snapshotState(info)
		}
		if i < len(manifest) {
			res.Layers[i].Digest, res.Layers[i].Size = manifest[i].Digest, manifest[i].Size
		}
	}
	return res, nil
}

// report calls progress with poll's result every interval until the
// returned stop is called, which calls it once more (unless ctx is done)
// and returns progress's first error. A nil progress is never called.
func report(ctx context.Context, progress func([]Layer) error, interval time.Duration, poll func() []Layer) (stop func() error) {
	if progress == nil {
		return func() error { return nil }
	}
	if interval <= 0 {
		interval = DefaultInterval
	}
	done := make(chan struct{})
	var wg sync.WaitGroup
	var perr error // the first error; the pull goes on regardless
	wg.Add(1)
	go func() {
		defer wg.Done()
		tick := time.NewTicker(interval)
		defer tick.Stop()
		for {
			select {
			case <-done:
				return
			case <-ctx.Done():
				return
			case <-tick.C:
				if perr == nil {
					perr = progress(poll())
				}
			}
		}
	}()
	return func() error {
		close(done)
		wg.Wait()
		if perr == nil && ctx.Err() == nil {
			perr = progress(poll())
		}
		return perr
	}
}
