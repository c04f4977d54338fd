package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/containerd/containerd/v2/core/remotes"
	"github.com/containerd/containerd/v2/core/remotes/docker"
	dockerconfig "github.com/containerd/containerd/v2/core/remotes/docker/config"
	"github.com/lazysnap/lazysnap/config"
	"github.com/lazysnap/lazysnap/fetcher"
	"github.com/lazysnap/lazysnap/pull"
)

func runPull(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("pull", flag.ContinueOnError)
	fs.SetOutput(stderr)
	envAddr, envNS := pull.Env(os.Getenv)
	address := fs.String("address", envAddr, "containerd socket ($CONTAINERD_ADDRESS if set)")
	ns := fs.String("namespace", envNS, "containerd namespace ($CONTAINERD_NAMESPACE if set)")
	sn := fs.String("snapshotter", "lazysnap", "snapshotter (the name of lazysnap's proxy plugin in containerd's config)")
	reg := addRegistryFlags(fs)
	quiet := fs.Bool("quiet", false, "print only the final line")
	progress := fs.String("progress", "auto", "progress display: auto (tty on a terminal, else plain), tty (redrawn in place) or plain (a line per event)")
	cfgPath := configFlag(fs, "lazysnap serve's TOML configuration file (to find its status socket)")
	status := fs.String("status", "", "lazysnap's status endpoint, for the progress of the layers it pulls itself: a unix socket path or an http:// URL (default: the configured one, if it exists; \"-\": none)")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: lazysnap pull [flags] REF\n\nPulls REF through containerd so that lazysnap mounts its eStargz and\nzstd:chunked layers, and gzip layers with a SOCI index, lazily; other layers\nare pulled as usual. Shows each layer's progress while pulling, then a summary.\n\nflags:")
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
	var render pull.Renderer
	if !*quiet {
		var err error
		if render, err = pull.NewRenderer(*progress, stdout); err != nil {
			return errUsage{err.Error()}
		}
	}
	ref := fs.Arg(0)
	client, err := pull.Connect(ctx, *address, *ns)
	if err != nil {
		return err
	}
	defer client.Close()
	opts := pull.Options{Snapshotter: *sn, Resolver: reg.resolver(ctx), Interval: pull.DefaultInterval}
	var rerr error // the display's first error; the pull goes on regardless
	if render != nil {
		lr := &lineRateProgress{target: statusTarget(fs, *status, *cfgPath)}
		opts.Progress = func(layers []pull.Layer) error {
			lr.fill(ctx, layers)
			if err := render.Update(layers); err != nil {
				rerr = fmt.Errorf("progress display: %w", err)
			}
			return rerr
		}
	}
	res, err := pull.Image(ctx, client, ref, opts)
	if render != nil && rerr == nil {
		if ferr := render.Finish(); err == nil && ferr != nil {
			err = fmt.Errorf("progress display: %w", ferr)
		}
	}
	if err != nil {
		return err
	}
	return pull.WriteSummary(stdout, res, *quiet)
}

// statusTarget is the status endpoint --status names, else the one the
// configuration names when its socket exists ("" for none).
func statusTarget(fs *flag.FlagSet, flagValue, cfgPath string) string {
	switch flagValue {
	case "-":
		return ""
	case "":
	default:
		return flagValue
	}
	cfg, err := config.Load(configPath(fs, cfgPath))
	if err != nil {
		return ""
	}
	if _, err := os.Stat(cfg.StatusSocket()); err != nil {
		return ""
	}
	return cfg.StatusSocket()
}

// registryFlags are the registry access flags of pull and convert, with
// lazysnap serve's defaults: the containerd hosts directory and the
// Docker config.
type registryFlags struct {
	hostsDir, dockerConfig, user *string
}

func addRegistryFlags(fs *flag.FlagSet) *registryFlags {
	def := config.Default().Registry
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
		Hosts: dockerconfig.ConfigureHosts(ctx, dockerconfig.HostOptions{HostDir: dockerconfig.HostDirFromRoot(*r.hostsDir), Credentials: creds}),
	})
}
