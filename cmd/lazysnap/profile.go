package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"path/filepath"

	"github.com/lazysnap/lazysnap/config"
	"github.com/lazysnap/lazysnap/fetcher"
	"github.com/lazysnap/lazysnap/profile"
)

// runProfile is `lazysnap profile list|show|push|rm`: the learned prefetch
// profiles under the configured root (package profile does the work).
func runProfile(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("profile", flag.ContinueOnError)
	fs.SetOutput(stderr)
	cfgPath := configFlag(fs, "lazysnap serve's TOML configuration file (root and registry access)")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: lazysnap profile [flags] list | show KEY | push KEY [REF] | rm KEY\n\nThe prefetch profiles lazysnap learned from cold starts, by image (KEY: a\nmanifest digest, as list prints it). push publishes one to REF's repository\n(default: the image it was recorded for) as an OCI artifact whose subject is\nthe image manifest; it needs push in the registry's hosts.toml.\n\nflags:")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if err == flag.ErrHelp {
			return nil
		}
		return errUsage{err.Error()}
	}
	cfg, err := config.Load(configPath(fs, *cfgPath))
	if err != nil {
		return err
	}
	s := profile.NewStore(filepath.Join(cfg.Root, "profiles"))
	a := fs.Args()
	switch {
	case len(a) == 1 && a[0] == "list":
		return profile.List(s, stdout)
	case len(a) == 2 && a[0] == "show":
		return profile.Show(s, a[1], stdout)
	case len(a) == 2 && a[0] == "rm":
		return profile.Remove(s, a[1])
	case (len(a) == 2 || len(a) == 3) && a[0] == "push":
		f, err := fetcher.New(fetcher.Config{HostsDir: cfg.Registry.HostsDir, DockerConfigPath: cfg.Registry.DockerConfig})
		if err != nil {
			return err
		}
		defer f.Close()
		return profile.Push(ctx, s, f, a[1], append(a[2:], "")[0], stdout)
	}
	fs.Usage()
	return errUsage{"expected list, show KEY, push KEY [REF] or rm KEY"}
}
