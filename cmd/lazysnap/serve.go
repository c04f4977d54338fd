package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"runtime/debug"
	"strings"
	"time"

	snapshotsapi "github.com/containerd/containerd/api/services/snapshots/v1"
	"github.com/containerd/containerd/v2/contrib/snapshotservice"
	"github.com/containerd/log"
	"github.com/lazysnap/lazysnap/fetcher"
	"github.com/lazysnap/lazysnap/fusemanager"
	"github.com/lazysnap/lazysnap/ops"
	"github.com/lazysnap/lazysnap/snapshotter"
	"github.com/pelletier/go-toml/v2"
	"google.golang.org/grpc"
)

// serveConfig is lazysnap serve's TOML configuration file.
type serveConfig struct {
	// Root holds the snapshots, the chunk cache and layer contents.
	Root string `toml:"root"`
	// Address is the unix socket containerd's proxy plugin connects to.
	Address string `toml:"address"`
	// StatusAddress is the unix socket serving GET /status (JSON) and
	// GET /metrics over HTTP; empty means status.sock beside Address.
	StatusAddress string `toml:"status_address"`
	// MetricsAddress is a TCP address (such as "127.0.0.1:9119") that also
	// serves /metrics and /status; empty, the default, serves them only on
	// the status socket.
	MetricsAddress string `toml:"metrics_address"`
	// MemoryLimit is a soft cap on the daemon's Go heap in bytes (the Go
	// runtime's GOMEMLIMIT); 0 leaves the runtime's default. The chunk
	// caches are bounded separately (cache.memory_bytes, cache.max_bytes).
	MemoryLimit int64 `toml:"memory_limit"`
	// Registry access: a containerd hosts directory (shared with
	// containerd) and a Docker config for credentials.
	Registry struct {
		HostsDir     string `toml:"hosts_dir"`
		DockerConfig string `toml:"docker_config"`
	} `toml:"registry"`
	Cache struct {
		MaxBytes    int64 `toml:"max_bytes"`
		MemoryBytes int64 `toml:"memory_bytes"`
	} `toml:"cache"`
	// FuseManager: whether the FUSE mounts are served by a separate,
	// long-lived `lazysnap fuse-manager` process (the default), so that
	// running containers keep their files while serve restarts.
	FuseManager struct {
		Enable bool `toml:"enable"`
		// Address is the manager's unix socket; empty means
		// fusemanager.sock in the root directory.
		Address string `toml:"address"`
	} `toml:"fuse_manager"`
	Fetch struct {
		NoPrefetch            bool   `toml:"no_prefetch"`
		NoBackground          bool   `toml:"no_background"`
		BackgroundConcurrency int    `toml:"background_concurrency"`
		ReadAhead             int    `toml:"read_ahead_chunks"`
		Timeout               string `toml:"timeout"`
		StallTimeout          string `toml:"stall_timeout"` // fetcher.Config.StallTimeout
		MaxConnsPerHost       int    `toml:"max_conns_per_host"`
	} `toml:"fetch"`
	// Index caps what a layer's in-memory index may take; a layer past a
	// cap is pulled the ordinary way (reason not-lazy).
	Index struct {
		MaxEntries     int   `toml:"max_entries"`      // TOC entries of one layer; 0 = estargz.DefaultMaxEntries
		MaxMemoryBytes int64 `toml:"max_memory_bytes"` // indexes of all mounted layers; 0 = no cap
	} `toml:"index"`
}

func defaultServeConfig() serveConfig {
	var c serveConfig
	c.Root = "/var/lib/lazysnap"
	c.Address = "/run/lazysnap/lazysnap.sock"
	c.Registry.HostsDir = "/etc/containerd/certs.d"
	c.Registry.DockerConfig = fetcher.DefaultDockerConfigPath()
	c.FuseManager.Enable = true
	return c
}

func loadServeConfig(path string) (serveConfig, error) {
	c := defaultServeConfig()
	if path == "" {
		return c, nil
	}
	f, err := os.Open(path)
	if err != nil {
		return c, err
	}
	defer f.Close()
	// strict: a misspelt key is an error, not a setting silently ignored
	if err := toml.NewDecoder(f).DisallowUnknownFields().Decode(&c); err != nil {
		return c, fmt.Errorf("config %s: %w", path, configError(err))
	}
	return c, nil
}

// configError names the keys and lines go-toml v2 keeps out of its
// errors' messages: an unknown key is "unknown key fetch.no_prefetc (line 2)"
// rather than "strict mode: fields in the document are missing in the target
// struct".
func configError(err error) error {
	var missing *toml.StrictMissingError
	if errors.As(err, &missing) {
		keys := make([]string, len(missing.Errors))
		for i := range missing.Errors {
			row, _ := missing.Errors[i].Position()
			keys[i] = fmt.Sprintf("%s (line %d)", strings.Join(missing.Errors[i].Key(), "."), row)
		}
		word := "key"
		if len(keys) > 1 {
			word = "keys"
		}
		return fmt.Errorf("unknown %s %s", word, strings.Join(keys, ", "))
	}
	var de *toml.DecodeError
	if errors.As(err, &de) {
		row, col := de.Position()
		if k := de.Key(); len(k) > 0 {
			return fmt.Errorf("%s (line %d, column %d): %w", strings.Join(k, "."), row, col, err)
		}
		return fmt.Errorf("line %d, column %d: %w", row, col, err)
	}
	return err
}

// parseDaemonFlags parses the flags of serve and fuse-manager: fs's own
// and the two they share, --config and --root, then loads the
// configuration with --root applied. A nil config and error means -h.
func parseDaemonFlags(fs *flag.FlagSet, args []string, stderr io.Writer) (*serveConfig, string, error) {
	fs.SetOutput(stderr)
	cfgPath := fs.String("config", "", "TOML configuration file")
	root := fs.String("root", "", "root directory (overrides the config)")
	if err := fs.Parse(args); err != nil {
		if err == flag.ErrHelp {
			return nil, "", nil
		}
		return nil, "", errUsage{err.Error()}
	}
	cfg, err := loadServeConfig(*cfgPath)
	if err != nil {
		return nil, "", err
	}
	if *root != "" {
		cfg.Root = *root
	}
	return &cfg, *cfgPath, nil
}

func runServe(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	addr := fs.String("address", "", "unix socket to serve on (overrides the config)")
	metricsAddr := fs.String("metrics-address", "", "TCP address serving /metrics and /status (overrides the config)")
	pcfg, cfgPath, err := parseDaemonFlags(fs, args, stderr)
	if err != nil || pcfg == nil {
		return err
	}
	cfg := *pcfg
	if *addr != "" {
		cfg.Address = *addr
	}
	if *metricsAddr != "" {
		cfg.MetricsAddress = *metricsAddr
	}
	if _, err := cfg.fetchTimeout(); err != nil {
		return err
	}
	if _, err := cfg.stallTimeout(); err != nil {
		return err
	}
	if cfg.MemoryLimit > 0 {
		debug.SetMemoryLimit(cfg.MemoryLimit)
	}
	logger := logger(ctx)
	// containerd's packages log through containerd/log; send it our way
	ctx = log.WithLogger(ctx, log.L)

	// the layers: served here, or by a fuse manager
	met := ops.NewMetrics("", version)
	var (
		fsys    snapshotter.FileSystem
		manager *fusemanager.Client // nil: in-process
		ls      *layerService       // nil: by the manager
	)
	if cfg.FuseManager.Enable {
		mfs := fusemanager.NewFS(fusemanager.NewClient(cfg.managerSocket()), managerStarter(cfgPath, cfg.Root))
		h, err := mfs.Ensure(ctx)
		if err != nil {
			return err
		}
		logger.InfoContext(ctx, "fuse manager", "address", mfs.Client().Socket(), "pid", h.PID, "version", h.Version)
		if h.Version != version {
			logger.WarnContext(ctx, "fuse manager runs another version; it keeps it until it is restarted", "manager_version", h.Version)
		}
		if err := gatherManager(met, mfs.Client()); err != nil {
			return err
		}
		fsys, manager = mfs, mfs.Client()
	} else {
		if ls, err = newLayerService(cfg, met, logger); err != nil {
			return err
		}
		defer ls.Close()
		fsys = ls.fs
	}
	sn, err := snapshotter.New(ctx, filepath.Join(cfg.Root, "snapshotter"), fsys)
	if err != nil {
		return err
	}
	defer sn.Close()

	// status and metrics: on the status socket, and on metrics_address
	if err := met.Register(ops.Sources{Snapshotter: sn.Stats}); err != nil {
		return err
	}
	var st statusReporter = &managerStatus{c: manager, sn: sn.Stats, fallbacks: sn.Fallbacks}
	if ls != nil {
		ls.status.Src.Snapshotter, ls.status.Src.Fallbacks = sn.Stats, sn.Fallbacks
		st = ls.status
	}
	opsSrv := &http.Server{Handler: opsHandler(met, st), ReadHeaderTimeout: 10 * time.Second}
	defer opsSrv.Close()
	opsListeners, err := listenOps(cfg)
	if err != nil {
		return err
	}
	for _, l := range opsListeners {
		go func() {
			if err := opsSrv.Serve(l); err != nil && !errors.Is(err, http.ErrServerClosed) {
				logger.ErrorContext(ctx, "status server failed", "address", l.Addr().String(), "error", err)
			}
		}()
	}

	if err := os.MkdirAll(filepath.Dir(cfg.Address), 0o711); err != nil {
		return err
	}
	if err := os.Remove(cfg.Address); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	l, err := net.Listen("unix", cfg.Address)
	if err != nil {
		return err
	}
	srv := grpc.NewServer()
	snapshotsapi.RegisterSnapshotsServer(srv, snapshotservice.FromSnapshotter(sn))
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(l) }()
	logger.InfoContext(ctx, "serving", "address", cfg.Address, "status", cfg.statusSocket(), "metrics", cfg.MetricsAddress, "root", cfg.Root, "version", version)
	fmt.Fprintf(stdout, "lazysnap serving on %s\n", cfg.Address)
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
		logger.InfoContext(ctx, "shutting down")
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
		opsSrv.Shutdown(sctx)
		cancel()
		stopped := make(chan struct{})
		go func() { srv.GracefulStop(); close(stopped) }()
		select {
		case <-stopped:
		case <-time.After(10 * time.Second):
			srv.Stop()
		}
		return nil
	}
}

// listenOps opens the status socket (mode 0600: status names images) and,
// if configured, the metrics TCP address.
func listenOps(cfg serveConfig) ([]net.Listener, error) {
	p := cfg.statusSocket()
	if err := os.MkdirAll(filepath.Dir(p), 0o711); err != nil {
		return nil, err
	}
	if err := os.Remove(p); err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, err
	}
	sl, err := net.Listen("unix", p)
	if err != nil {
		return nil, fmt.Errorf("status socket: %w", err)
	}
	if err := os.Chmod(p, 0o600); err != nil {
		sl.Close()
		return nil, err
	}
	if cfg.MetricsAddress == "" {
		return []net.Listener{sl}, nil
	}
	ml, err := net.Listen("tcp", cfg.MetricsAddress)
	if err != nil {
		sl.Close()
		return nil, fmt.Errorf("metrics_address: %w", err)
	}
	return []net.Listener{sl, ml}, nil
}
