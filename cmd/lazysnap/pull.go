package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"time"

	containerd "github.com/containerd/containerd"
	"github.com/containerd/containerd/images"
	"github.com/containerd/containerd/pkg/snapshotters"
	"github.com/containerd/containerd/remotes/docker"
	"github.com/containerd/containerd/remotes/docker/config"
	"github.com/lazysnap/lazysnap/snapshotter"
	"github.com/opencontainers/go-digest"
	"github.com/opencontainers/image-spec/identity"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

func runPull(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("pull", flag.ContinueOnError)
	fs.SetOutput(stderr)
	address := fs.String("address", "/run/containerd/containerd.sock", "containerd socket")
	ns := fs.String("namespace", "default", "containerd namespace")
	sn := fs.String("snapshotter", "lazysnap", "snapshotter (the name of lazysnap's proxy plugin in containerd's config)")
	hostsDir := fs.String("hosts-dir", "/etc/containerd/certs.d", "containerd hosts directory (mirrors, TLS, plain HTTP)")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: lazysnap pull [flags] REF\n\nPulls REF through containerd so that eStargz layers are mounted lazily by\nlazysnap and other layers are pulled as usual.\n\nflags:")
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
	ref := fs.Arg(0)
	client, err := containerd.New(*address, containerd.WithDefaultNamespace(*ns))
	if err != nil {
		return err
	}
	defer client.Close()
	resolver := docker.NewResolver(docker.ResolverOptions{
		Hosts: config.ConfigureHosts(ctx, config.HostOptions{HostDir: config.HostDirFromRoot(*hostsDir)}),
	})
	var layers []ocispec.Descriptor
	start := time.Now()
	img, err := client.Pull(ctx, ref,
		containerd.WithResolver(resolver),
		containerd.WithPullUnpack,
		containerd.WithPullSnapshotter(*sn),
		containerd.WithImageHandlerWrapper(func(h images.Handler) images.Handler {
			// the labels containerd's CRI plugin sets: remote snapshotters
			// find the image and layer through them
			h = snapshotters.AppendInfoHandlerWrapper(ref)(h)
			return images.HandlerFunc(func(ctx context.Context, desc ocispec.Descriptor) ([]ocispec.Descriptor, error) {
				children, err := h.Handle(ctx, desc)
				if images.IsManifestType(desc.MediaType) {
					for _, c := range children {
						if images.IsLayerType(c.MediaType) {
							layers = append(layers, c)
						}
					}
				}
				return children, err
			})
		}),
	)
	if err != nil {
		return err
	}
	took := time.Since(start)
	diffIDs, err := img.RootFS(ctx)
	if err != nil {
		return err
	}
	chain := identity.ChainIDs(append([]digest.Digest(nil), diffIDs...))
	snaps := client.SnapshotService(*sn)
	lazy := 0
	for i, id := range chain {
		how := "unpacked"
		if info, err := snaps.Stat(ctx, id.String()); err == nil && info.Labels[snapshotter.LabelRemote] != "" {
			how = "lazy (remote snapshot)"
			lazy++
		}
		name := diffIDs[i].String()
		if i < len(layers) {
			name = fmt.Sprintf("%s (%d bytes)", layers[i].Digest, layers[i].Size)
		}
		fmt.Fprintf(stdout, "layer %d: %s: %s\n", i, name, how)
	}
	_, err = fmt.Fprintf(stdout, "pulled %s in %s: %d of %d layers lazy\n", img.Name(), took.Round(time.Millisecond), lazy, len(chain))
	return err
}
