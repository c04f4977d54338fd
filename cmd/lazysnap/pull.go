package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"strings"
	"sync"
	"time"

	containerd "github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/core/content"
	"github.com/containerd/containerd/v2/core/images"
	"github.com/containerd/containerd/v2/core/remotes"
	"github.com/containerd/containerd/v2/core/remotes/docker"
	"github.com/containerd/containerd/v2/core/remotes/docker/config"
	"github.com/containerd/containerd/v2/core/snapshots"
	"github.com/containerd/containerd/v2/pkg/snapshotters"
	"github.com/lazysnap/lazysnap/fetcher"
	"github.com/lazysnap/lazysnap/snapshotter"
	"github.com/opencontainers/go-digest"
	"github.com/opencontainers/image-spec/identity"
)

// progressInterval is how often the live display is refreshed (10 Hz).
const progressInterval = 100 * time.Millisecond

func runPull(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("pull", flag.ContinueOnError)
	fs.SetOutput(stderr)
	address := fs.String("address", "/run/containerd/containerd.sock", "containerd socket")
	ns := fs.String("namespace", "default", "containerd namespace")
	sn := fs.String("snapshotter", "lazysnap", "snapshotter (the name of lazysnap's proxy plugin in containerd's config)")
	reg := addRegistryFlags(fs)
	quiet := fs.Bool("quiet", false, "print only the final line")
	progress := fs.String("progress", "auto", "progress display: auto (tty on a terminal, else plain), tty (redrawn in place) or plain (a line per event)")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: lazysnap pull [flags] REF\n\nPulls REF through containerd so that eStargz layers are mounted lazily by\nlazysnap and other layers are pulled as usual. Shows each layer's progress\nwhile pulling, then a summary.\n\nflags:")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if err == flag.ErrHelp {
			return nil
		}
		return errUsage{err.Error()}
	}
	if fs.NArg() != 1 {
		fs.Usage()
		return errUsage{"want one image reference"}
	}
	var render pullRenderer
	if !*quiet {
		var err error
		if render, err = newPullRenderer(*progress, stdout); err != nil {
			return errUsage{err.Error()}
		}
	}
	ref := fs.Arg(0)
	client, err := containerd.New(*address, containerd.WithDefaultNamespace(*ns))
	if err != nil {
		return fmt.Errorf("connecting to containerd at %s: %w", *address, err)
	}
	defer client.Close()
	// containerd 2's client connects at its first call, not in New
	if _, err := client.Version(ctx); err != nil {
		return fmt.Errorf("connecting to containerd at %s: %w", *address, err)
	}
	resolver := reg.resolver(ctx)
	tracker := newPullTracker()
	snaps := client.SnapshotService(*sn)
	stopProgress := showProgress(ctx, render, tracker, client.ContentStore(), snaps)
	start := time.Now()
	img, err := client.Pull(ctx, ref,
		containerd.WithResolver(resolver),
		containerd.WithPullUnpack,
		containerd.WithPullSnapshotter(*sn),
		containerd.WithImageHandlerWrapper(func(h images.Handler) images.Handler {
			// the labels containerd's CRI plugin sets: remote snapshotters
			// find the image and layer through them
			return tracker.wrap(snapshotters.AppendInfoHandlerWrapper(ref)(h))
		}),
	)
	took := time.Since(start)
	if perr := stopProgress(); err == nil && perr != nil {
		err = perr
	}
	if err != nil {
		return fmt.Errorf("pulling %s: %w", ref, err)
	}
	return printSummary(ctx, stdout, *quiet, img, snaps, tracker, took)
}

// registryFlags are the registry access flags of pull and convert, with
// lazysnap serve's defaults: the containerd hosts directory and the
// Docker config.
type registryFlags struct {
	hostsDir, dockerConfig, user *string
}

func addRegistryFlags(fs *flag.FlagSet) *registryFlags {
	def := defaultServeConfig().Registry
	return &registryFlags{
		hostsDir:     fs.String("hosts-dir", def.HostsDir, "containerd hosts directory (mirrors, TLS, plain HTTP, push capability)"),
		dockerConfig: fs.String("docker-config", def.DockerConfig, "Docker config file with registry credentials (auths, credHelpers, credsStore), as lazysnap serve reads it"),
		user:         fs.String("user", "", "registry credentials USER[:PASSWORD] (instead of the Docker config)"),
	}
}

// resolver is containerd's docker resolver over the flags' hosts
// directory and credentials.
func (r *registryFlags) resolver(ctx context.Context) remotes.Resolver {
	creds := fetcher.DockerCredentials(*r.dockerConfig)
	if *r.user != "" {
		name, secret, _ := strings.Cut(*r.user, ":")
		creds = func(string) (string, string, error) { return name, secret, nil }
	}
	return docker.NewResolver(docker.ResolverOptions{
		Hosts: config.ConfigureHosts(ctx, config.HostOptions{HostDir: config.HostDirFromRoot(*r.hostsDir), Credentials: creds}),
	})
}

// showProgress renders the tracker's view every progressInterval until the
// returned stop is called, which renders the last state and finishes the
// display. A nil pullRenderer shows nothing.
func showProgress(ctx context.Context, r pullRenderer, t *pullTracker, cs content.Store, sn snapshots.Snapshotter) (stop func() error) {
	if r == nil {
		return func() error { return nil }
	}
	done := make(chan struct{})
	var wg sync.WaitGroup
	var werr error // the first write error; the pull goes on regardless
	wg.Add(1)
	go func() {
		defer wg.Done()
		tick := time.NewTicker(progressInterval)
		defer tick.Stop()
		for {
			select {
			case <-done:
				return
			case <-ctx.Done():
				return
			case <-tick.C:
				if werr == nil {
					werr = r.update(t.poll(ctx, cs, sn))
				}
			}
		}
	}()
	return func() error {
		close(done)
		wg.Wait()
		if werr != nil {
			return fmt.Errorf("progress display: %w", werr)
		}
		if ctx.Err() == nil {
			if err := r.update(t.poll(ctx, cs, sn)); err != nil {
				return fmt.Errorf("progress display: %w", err)
			}
		}
		if err := r.finish(); err != nil {
			return fmt.Errorf("progress display: %w", err)
		}
		return nil
	}
}

// printSummary prints each layer's final state (unless quiet) and a line on
// the whole pull.
func printSummary(ctx context.Context, w io.Writer, quiet bool, img containerd.Image, snaps snapshots.Snapshotter, t *pullTracker, took time.Duration) error {
	diffIDs, err := img.RootFS(ctx)
	if err != nil {
		return fmt.Errorf("reading the layers of %s: %w", img.Name(), err)
	}
	layers := t.manifestLayers()
	chain := identity.ChainIDs(append([]digest.Digest(nil), diffIDs...))
	lazy := 0
	for i, id := range chain {
		how := pullUnpacked
		if info, err := snaps.Stat(ctx, id.String()); err == nil && info.Labels[snapshotter.LabelRemote] != "" {
			how = pullLazy
			lazy++
		}
		if quiet {
			continue
		}
		name := diffIDs[i].String()
		if i < len(layers) {
			name = fmt.Sprintf("%s (%d bytes)", layers[i].Digest, layers[i].Size)
		}
		if _, err := fmt.Fprintf(w, "layer %d: %s: %s\n", i, name, how); err != nil {
			return err
		}
	}
	_, err = fmt.Fprintf(w, "pulled %s in %s: %d of %d layers lazy\n", img.Name(), took.Round(time.Millisecond), lazy, len(chain))
	return err
}
