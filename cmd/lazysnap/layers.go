package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"syscall"
	"time"

	"github.com/lazysnap/lazysnap/fetcher"
	lfs "github.com/lazysnap/lazysnap/fs"
	"github.com/lazysnap/lazysnap/index"
	"github.com/lazysnap/lazysnap/ops"
	"github.com/lazysnap/lazysnap/remote"
	"github.com/opencontainers/go-digest"
)

// layerService is the half of lazysnap that serves layers: registry access,
// the FUSE mounts and their status and metrics. lazysnap serve runs it in
// its own process when fuse_manager.enable is false, and otherwise talks to
// a `lazysnap fuse-manager` process that runs it (fusemanager.go), so that
// the FUSE mounts outlive a restart of serve.
type layerService struct {
	fetcher *fetcher.Fetcher
	fs      *remote.FS
	root    string // content directories live under root/content
	met     *ops.Metrics
	status  *ops.Server
}

// fetchTimeout is fetch.timeout, parsed.
func (c serveConfig) fetchTimeout() (time.Duration, error) {
	return parseDurationKey("fetch.timeout", c.Fetch.Timeout)
}

// stallTimeout is fetch.stall_timeout, parsed: 0 (unset) is the
// fetcher's default, negative turns the stall timeout off.
func (c serveConfig) stallTimeout() (time.Duration, error) {
	return parseDurationKey("fetch.stall_timeout", c.Fetch.StallTimeout)
}

// parseDurationKey parses the duration v of config key key; "" is 0.
func parseDurationKey(key, v string) (time.Duration, error) {
	if v == "" {
		return 0, nil
	}
	d, err := time.ParseDuration(v)
	if err != nil {
		return 0, fmt.Errorf("%s: %w", key, err)
	}
	return d, nil
}

// newLayerService builds the layer half from cfg; its metrics go to met.
func newLayerService(cfg serveConfig, met *ops.Metrics, log *slog.Logger) (*layerService, error) {
	timeout, err := cfg.fetchTimeout()
	if err != nil {
		return nil, err
	}
	stall, err := cfg.stallTimeout()
	if err != nil {
		return nil, err
	}
	f, err := fetcher.New(fetcher.Config{
		HostsDir:         cfg.Registry.HostsDir,
		DockerConfigPath: cfg.Registry.DockerConfig,
		CacheDir:         filepath.Join(cfg.Root, "cache"),
		CacheMaxBytes:    cfg.Cache.MaxBytes,
		MemCacheMaxBytes: cfg.Cache.MemoryBytes,
		MaxConnsPerHost:  cfg.Fetch.MaxConnsPerHost,
		StallTimeout:     stall,
	})
	if err != nil {
		return nil, err
	}
	rfs := remote.New(remote.NewRegistrySource(f), remote.Options{
		Root: cfg.Root,
		Layer: lfs.Options{
			NoPrefetch: cfg.Fetch.NoPrefetch, NoBackground: cfg.Fetch.NoBackground,
			BackgroundConcurrency: cfg.Fetch.BackgroundConcurrency, ReadAhead: cfg.Fetch.ReadAhead,
			FetchTimeout: timeout, OnReadLatency: met.ObserveRead,
		},
		OnError:     func(layer digest.Digest, err error) { log.Error("layer read failed", "layer", layer, "error", err) },
		MaxEntries:  cfg.Index.MaxEntries,
		IndexMemory: index.NewBudget(cfg.Index.MaxMemoryBytes),
		OnMount: func(l remote.LayerInfo) {
			log.Info("layer mounted lazily", "layer", l.Digest, "ref", l.Ref, "format", l.Format, "mountpoint", l.Mountpoint)
		},
	})
	src := ops.Sources{Registries: f.Stats, RegistryErrors: f.ErrorStats, Cache: f.CacheUsage, Layers: rfs.Layers}
	if err := met.Register(src); err != nil {
		f.Close()
		return nil, err
	}
	return &layerService{fetcher: f, fs: rfs, root: cfg.Root, met: met,
		status: &ops.Server{FS: rfs, Src: src, Version: version, NoPrefetch: cfg.Fetch.NoPrefetch, Background: !cfg.Fetch.NoBackground}}, nil
}

// unmountAll unmounts every layer, detaching those still in use.
func (l *layerService) unmountAll(ctx context.Context) error {
	var errs []error
	for _, m := range l.fs.Layers() {
		if err := l.fs.Unmount(ctx, m.Mountpoint); err != nil {
			if derr := syscall.Unmount(m.Mountpoint, syscall.MNT_DETACH); derr != nil && !errors.Is(derr, syscall.EINVAL) {
				errs = append(errs, fmt.Errorf("unmount %s: %w", m.Mountpoint, err))
			}
		}
	}
	return errors.Join(errs...)
}

// Close releases the fetcher; mounts are left as they are.
func (l *layerService) Close() error { return l.fetcher.Close() }
