package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"syscall"

	"github.com/lazysnap/lazysnap/config"
	"github.com/lazysnap/lazysnap/credprovider"
	"github.com/lazysnap/lazysnap/fetcher"
	"github.com/lazysnap/lazysnap/fs/fetch"
	"github.com/lazysnap/lazysnap/fusemanager"
	"github.com/lazysnap/lazysnap/index"
	"github.com/lazysnap/lazysnap/ops"
	"github.com/lazysnap/lazysnap/profile"
	"github.com/lazysnap/lazysnap/remote"
	"github.com/lazysnap/lazysnap/snapshotter"
	"github.com/opencontainers/go-digest"
)

// layerService is the half of lazysnap that serves layers: registry access,
// the FUSE mounts and their status and metrics. lazysnap serve runs it in
// its own process when fuse_manager.enable is false, and otherwise talks to
// a `lazysnap fuse-manager` process that runs it (fusemanager.go), so that
// the FUSE mounts outlive a restart of serve.
type layerService struct {
	fetcher   *fetcher.Fetcher
	pullAuths *fetcher.PullAuths // CRI pulls' auths (cri.listen_address)
	fs        *remote.FS
	closeSink func() error // the content store connection ([pull] content_store), nil without
	root      string       // content directories live under root/content
	met       *ops.Metrics
	status    *ops.Server
	hfs       *fusemanager.HandoverFS // the fuse manager's: fs with the mounts held for its successor
}

// newLayerService builds the layer half from cfg; its metrics go to met.
// handoverDir holds the mounts' open tables for a successor to adopt them
// (the fuse manager's; "" in serve).
func newLayerService(cfg config.Config, handoverDir string, met *ops.Metrics, log *slog.Logger) (*layerService, error) {
	pullAuths := fetcher.NewPullAuths()
	creds := []fetcher.CredentialSource{pullAuths}
	if cfg.Registry.CredentialProviderConfig != "" {
		ps, err := credprovider.Load(cfg.Registry.CredentialProviderConfig, cfg.Registry.CredentialProviderBinDir)
		if err != nil {
			return nil, err
		}
		creds = append(creds, ps)
	}
	f, err := fetcher.New(fetcher.Config{
		HostsDir:         cfg.Registry.HostsDir,
		DockerConfigPath: cfg.Registry.DockerConfig,
		Credentials:      creds,
		CacheDir:         filepath.Join(cfg.Root, "cache"),
		CacheMaxBytes:    cfg.Cache.MaxBytes,
		MemCacheMaxBytes: cfg.Cache.MemoryBytes,
		MaxConnsPerHost:  cfg.Fetch.MaxConnsPerHost,
		StallTimeout:     cfg.Fetch.StallTimeout.D(),
		RequestTimeout:   cfg.Fetch.RequestTimeout.D(),
		WrapTransport:    met.RegistryTransport,
	})
	if err != nil {
		return nil, err
	}
	var profiles *remote.ProfileOptions
	if cfg.Profile.Record || cfg.Profile.Fetch {
		profiles = &remote.ProfileOptions{Store: profile.NewStore(filepath.Join(cfg.Root, "profiles")), Registry: f,
			Fetch: cfg.Profile.Fetch, Publish: cfg.Profile.Publish, NoRecord: !cfg.Profile.Record,
			Limits:  profile.Limits{Quiet: cfg.Profile.Quiet.D(), Total: cfg.Profile.MaxDuration.D(), MaxChunks: cfg.Profile.MaxChunks},
			OnError: func(key string, err error) { log.Warn("prefetch profile", "image", key, "error", err) }}
	}
	var closeSink func() error
	pullOpts := remote.PullOptions{Connections: cfg.Pull.Connections, PartSize: cfg.Pull.PartBytes,
		Concurrency: cfg.Pull.Concurrency, NoIndex: !cfg.Pull.Index}
	if cfg.Pull.ContentStore {
		if pullOpts.Sink, closeSink, err = contentSink(cfg.Pull.ContainerdAddress); err != nil {
			f.Close()
			return nil, err
		}
	}
	var publish *remote.PublishOptions
	if cfg.Soci.PublishRepository != "" {
		publish = &remote.PublishOptions{Repository: cfg.Soci.PublishRepository, Registry: f}
	}
	rfs := remote.New(remote.NewRegistrySource(f, remote.WithSociV1(cfg.Soci.AllowV1Indexes), remote.WithTrustedSociRepositories(cfg.Soci.TrustedRepositories...)), remote.Options{
		Publish:    publish,
		Profiles:   profiles,
		Root:       cfg.Root,
		VerifyBlob: cfg.Fetch.VerifyBlob,
		Layer: fetch.Options{
			NoPrefetch: cfg.Fetch.NoPrefetch, NoBackground: cfg.Fetch.NoBackground,
			BackgroundConcurrency: cfg.Fetch.BackgroundConcurrency, ReadAhead: cfg.Fetch.ReadAhead,
			FetchTimeout: cfg.Fetch.Timeout.D(), OnReadLatency: met.ObserveRead, OnOp: met.ObserveFUSE,
			BackgroundQuiet: cfg.Fetch.BackgroundQuiet.D(), BackgroundInflight: cfg.Fetch.BackgroundInflight, ReadAround: cfg.Fetch.ReadAround,
			NoPredict: cfg.Fetch.NoPredict, NoPreempt: cfg.Fetch.NoPreempt,
		},
		OnError: func(layer digest.Digest, err error) {
			log.Error("layer read failed", "layer", layer, "error", err)
			if pe := (*fetch.PanicError)(nil); errors.As(err, &pe) {
				log.Debug("layer panic stack", "layer", layer, "stack", pe.Stack)
			}
		},
		MaxEntries:  cfg.Index.MaxEntries,
		IndexMemory: index.NewBudget(cfg.Index.MaxMemoryBytes),
		Handover:    handoverDir,
		Pull:        pullOpts,
		OnMount: func(l remote.LayerInfo) {
			log.Info("layer mounted lazily", "layer", l.Digest, "ref", l.Ref, "format", l.Format, "mountpoint", l.Mountpoint)
		},
	})
	src := ops.Sources{Registries: f.Stats, RegistryErrors: f.ErrorStats, Cache: f.CacheUsage, Layers: rfs.Layers,
		Verify: rfs.VerifyStats, BadLayers: rfs.BadLayers, PullAuths: pullAuths.Repositories, Pulls: rfs.Pulls}
	if err := met.Register(src); err != nil {
		f.Close()
		if closeSink != nil {
			closeSink()
		}
		return nil, err
	}
	return &layerService{fetcher: f, pullAuths: pullAuths, fs: rfs, root: cfg.Root, met: met, closeSink: closeSink,
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

// Close stops the FS's goroutines, releases the fetcher and the content
// store connection; mounts are left as they are (remote.FS.Close detaches
// those still served).
func (l *layerService) Close() error {
	err := errors.Join(l.fs.Close(), l.fetcher.Close())
	if l.closeSink != nil {
		err = errors.Join(err, l.closeSink())
	}
	return err
}

// handler serves the manager protocol for l.
func (l *layerService) handler(root string) http.Handler {
	var fs interface {
		snapshotter.FileSystem
		snapshotter.Usager
		snapshotter.Cleaner
		snapshotter.Puller
	} = l.fs
	if l.hfs != nil {
		fs = l.hfs
	}
	return fusemanager.Handler(fusemanager.Service{
		FS:        fs,
		PullAuths: l.pullAuths,
		Health:    fusemanager.Health{PID: os.Getpid(), Version: version, Root: root},
		Metrics:   l.met.Handler(),
		Status:    l.status.Report,
	})
}
