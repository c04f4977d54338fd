package main

import (
	"cmp"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"runtime/debug"
	"sync"
	"time"

	snapshotsapi "github.com/containerd/containerd/api/services/snapshots/v1"
	"github.com/containerd/containerd/v2/contrib/snapshotservice"
	"github.com/containerd/log"
	"github.com/coreos/go-systemd/v22/daemon"
	"github.com/lazysnap/lazysnap/config"
	"github.com/lazysnap/lazysnap/cri"
	"github.com/lazysnap/lazysnap/fusemanager"
	"github.com/lazysnap/lazysnap/internal/logging"
	"github.com/lazysnap/lazysnap/internal/sockets"
	"github.com/lazysnap/lazysnap/ops"
	"github.com/lazysnap/lazysnap/snapshotter"
	"google.golang.org/grpc"
)

// configFlag adds --config, defaulting to config.DefaultPath, to fs.
func configFlag(fs *flag.FlagSet, usage string) *string {
	return fs.String("config", config.DefaultPath, usage+"; the defaults if absent and not given")
}

// configPath is the file to load for the parsed --config flag: "" when it
// was left at its default and that file does not exist.
func configPath(fs *flag.FlagSet, path string) string {
	given := false
	fs.Visit(func(f *flag.Flag) { given = given || f.Name == "config" })
	if _, err := os.Stat(path); !given && path == config.DefaultPath && errors.Is(err, os.ErrNotExist) {
		return ""
	}
	return path
}

// daemonUsage is the -h text of serve and fuse-manager.
func daemonUsage(fs *flag.FlagSet, stderr io.Writer, synopsis, about string) {
	fs.Usage = func() {
		fmt.Fprintf(stderr, "usage: lazysnap %s\n\n%s\n\nConfiguration: %s by default (every key optional; README.md lists them).\n\nflags:\n", synopsis, about, config.DefaultPath)
		fs.PrintDefaults()
	}
}

// parseDaemonFlags parses the flags of serve and fuse-manager: fs's own
// and the two they share, --config and --root, then loads the
// configuration with --root, --log-level and --log-format applied, and
// makes its [log] ctx's logger's and containerd's (log.L). It returns the
// configuration file it read ("" for none). A nil config and error means -h.
func parseDaemonFlags(ctx context.Context, fs *flag.FlagSet, args []string, stderr io.Writer) (context.Context, *config.Config, string, error) {
	fs.SetOutput(stderr)
	cfgFlag := configFlag(fs, "TOML configuration file")
	root := fs.String("root", "", "root directory (overrides the config)")
	level := fs.String("log-level", "", "lowest level logged: "+logging.Levels+" (overrides [log] level; default info)")
	format := fs.String("log-format", "", "log format: "+logging.Formats+" (overrides [log] format; default text)")
	if err := fs.Parse(args); err != nil {
		if err == flag.ErrHelp {
			return ctx, nil, "", nil
		}
		return ctx, nil, "", errUsage{err.Error()}
	}
	if fs.NArg() != 0 {
		fs.Usage()
		return ctx, nil, "", errUsage{"no arguments expected"}
	}
	cfgPath := configPath(fs, *cfgFlag)
	cfg, err := config.Load(cfgPath)
	if err != nil {
		return ctx, nil, "", err
	}
	cfg.Root = cmp.Or(*root, cfg.Root)
	cfg.Log.Level, cfg.Log.Format = cmp.Or(*level, cfg.Log.Level), cmp.Or(*format, cfg.Log.Format)
	h, err := logging.New(stderr, cfg.Log)
	if err != nil {
		return ctx, nil, "", err
	}
	log.L = logging.Containerd(h) // containerd's packages and snapshotter/ log through log.G
	return withLogger(ctx, slog.New(h)), &cfg, cfgPath, nil
}

func runServe(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	addr := fs.String("address", "", "unix socket to serve on (overrides the config)")
	metricsAddr := fs.String("metrics-address", "", "TCP address serving /metrics and /status (overrides the config)")
	startManager := fs.Bool("start-fuse-manager", true, "start a fuse manager when none answers; false when its own service runs it (lazysnap-fuse-manager.service): wait for it instead")
	daemonUsage(fs, stderr, "serve [flags]", `Runs the snapshotter daemon: containerd's proxy plugin "lazysnap" connects
to its gRPC socket. It mounts lazy layers through the fuse manager (started
if none answers; see lazysnap fuse-manager -h) and serves /status and
/metrics on status.sock beside the socket. SIGTERM or SIGINT stop it.`)
	ctx, pcfg, cfgPath, err := parseDaemonFlags(ctx, fs, args, stderr)
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
	if cfg.MemoryLimit > 0 {
		debug.SetMemoryLimit(cfg.MemoryLimit)
	}
	logger := logger(ctx)
	// containerd's packages log through containerd/log; send it our way
	ctx = log.WithLogger(ctx, log.L)
	criAddr, warning, err := cfg.CRIListenAddress()
	if err != nil {
		return err
	}
	if warning != "" {
		logger.WarnContext(ctx, warning)
	}

	// the layers: served here, or by a fuse manager
	met := ops.NewMetrics("", version)
	var (
		fsys    snapshotter.FileSystem
		manager *fusemanager.Client // nil: in-process
		ls      *layerService       // nil: by the manager
		auths   cri.AuthStore       // where the CRI image service keeps pull auths
	)
	if cfg.FuseManager.Enable {
		var start func() (<-chan error, error) // nil: the manager's service starts it
		if *startManager {
			start = managerStarter(cfgPath, cfg.Root, cfg.Log)
		}
		mfs := fusemanager.NewFS(fusemanager.NewClient(cfg.ManagerSocket()), start)
		h, err := mfs.Ensure(ctx)
		if err != nil {
			return err
		}
		logger.InfoContext(ctx, "fuse manager", "address", mfs.Client().Socket(), "pid", h.PID, "version", h.Version)
		if h.Version != version {
			logger.WarnContext(ctx, "fuse manager runs another version; it keeps it until it is restarted", "manager_version", h.Version)
		}
		if err := mfs.Client().GatherInto(met); err != nil {
			return err
		}
		fsys, manager, auths = mfs, mfs.Client(), mfs
		go mfs.Supervise(ctx, time.Second, func(h fusemanager.Health, err error) {
			if err != nil {
				logger.ErrorContext(ctx, "starting a fuse manager", "error", err)
				return
			}
			logger.InfoContext(ctx, "started a fuse manager", "pid", h.PID, "version", h.Version)
		})
	} else {
		if ls, err = newLayerService(cfg, "", met, logger); err != nil {
			return err
		}
		defer ls.Close()
		fsys, auths = ls.fs, cri.LocalAuths(ls.pullAuths)
	}
	snOpts := []snapshotter.Opt{snapshotter.WithOnMount(met.ObserveMount)}
	if !cfg.Pull.LineRate {
		snOpts = append(snOpts, snapshotter.WithoutPull())
	}
	sn, err := snapshotter.New(ctx, filepath.Join(cfg.Root, "snapshotter"), fsys, snOpts...)
	if err != nil {
		return err
	}
	defer sn.Close()

	// status and metrics: on the status socket, and on metrics_address
	if err := met.Register(ops.Sources{Snapshotter: sn.Stats}); err != nil {
		return err
	}
	report := (&fusemanager.Status{Client: manager, Version: version, Snapshotter: sn.Stats, Fallbacks: sn.Fallbacks}).Report
	if ls != nil {
		ls.status.Src.Snapshotter, ls.status.Src.Fallbacks = sn.Stats, sn.Fallbacks
		report = ls.status.Report
	}
	var opsSrvs []*http.Server
	defer func() {
		for _, srv := range opsSrvs {
			srv.Close()
		}
	}()
	opsListeners, err := listenOps(ctx, cfg)
	if err != nil {
		return err
	}
	for i, l := range opsListeners {
		// the status socket is root's; the TCP address serves /status only when asked
		h := ops.Handler(met, report)
		if i > 0 && !cfg.MetricsServeStatus {
			h = ops.Handler(met, nil)
		}
		srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
		opsSrvs = append(opsSrvs, srv)
		go func() {
			if err := srv.Serve(l); err != nil && !errors.Is(err, http.ErrServerClosed) {
				logger.ErrorContext(ctx, "status server failed", "address", l.Addr().String(), "error", err)
			}
		}()
	}

	// containerd's socket, root's alone: it prepares and removes snapshots
	l, err := sockets.Listen(ctx, "unix", cfg.Address, 0o600, 0o711)
	if err != nil {
		return err
	}
	l.RootOrOwner()
	srv := grpc.NewServer()
	snapshotsapi.RegisterSnapshotsServer(srv, snapshotservice.FromSnapshotter(sn))
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(l) }()
	stopCRI := func() {}
	if criAddr != "" {
		if stopCRI, err = serveCRI(ctx, cfg, criAddr, auths, errc); err != nil {
			srv.Stop()
			return err
		}
	}
	stopCRI = sync.OnceFunc(stopCRI)
	defer stopCRI()
	logger.InfoContext(ctx, "serving", "address", cfg.Address, "status", cfg.StatusSocket(), "metrics", cfg.MetricsAddress, "root", cfg.Root, "version", version)
	fmt.Fprintf(stdout, "lazysnap serving on %s\n", cfg.Address)
	notifySystemd(ctx, daemon.SdNotifyReady)
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
		// within shutdownBound (main), whatever is in flight: calls get
		// gracePeriod to finish, then are cancelled
		logger.InfoContext(ctx, "shutting down")
		notifySystemd(ctx, daemon.SdNotifyStopping)
		done := make(chan struct{})
		go func() { defer close(done); stopCRI() }()
		stopGracefully(srv, gracePeriod)
		<-done
		return nil
	}
}

// gracePeriod is how long calls in flight may take to finish at shutdown.
const gracePeriod = 5 * time.Second

// stopGracefully lets srv's calls in flight finish, for at most timeout,
// then cancels them.
func stopGracefully(srv *grpc.Server, timeout time.Duration) {
	stopped := make(chan struct{})
	go func() { srv.GracefulStop(); close(stopped) }()
	select {
	case <-stopped:
	case <-time.After(timeout):
		srv.Stop()
		<-stopped
	}
}

// serveCRI serves the CRI image service (package cri) on p, forwarding to
// containerd's CRI socket; its failure is sent to errc. stop stops it.
func serveCRI(ctx context.Context, cfg config.Config, p string, auths cri.AuthStore, errc chan<- error) (stop func(), err error) {
	logger := logger(ctx)
	conn, err := cri.Dial(cfg.CRI.ContainerdCRIAddress)
	if err != nil {
		return nil, err
	}
	proxy := cri.NewProxy(conn, auths, cri.Options{
		OnAuthError: func(image string, err error) {
			logger.WarnContext(ctx, "CRI pull auth", "image", image, "error", err)
		},
		OnPull: func(image string, withAuth bool, err error) {
			if err != nil {
				logger.InfoContext(ctx, "CRI pull failed", "image", image, "auth", withAuth, "error", err)
				return
			}
			logger.InfoContext(ctx, "CRI pull", "image", image, "auth", withAuth)
		},
	})
	l, err := sockets.Listen(ctx, "unix", p, 0o600, 0o711)
	if err != nil {
		conn.Close()
		return nil, fmt.Errorf("[cri] listen_address: %w", err)
	}
	l.RootOrOwner()
	srv := cri.NewServer(proxy)
	go func() {
		if err := srv.Serve(l); err != nil {
			errc <- fmt.Errorf("CRI image service: %w", err)
		}
	}()
	logger.InfoContext(ctx, "CRI image service", "address", p, "containerd", cfg.CRI.ContainerdCRIAddress)
	return func() {
		stopGracefully(srv, gracePeriod)
		conn.Close()
	}, nil
}

// notifySystemd tells systemd the daemon's state (Type=notify units: ready
// once the socket is served); without NOTIFY_SOCKET it does nothing.
func notifySystemd(ctx context.Context, state string) {
	if _, err := daemon.SdNotify(false, state); err != nil {
		logger(ctx).WarnContext(ctx, "notifying systemd", "state", state, "error", err)
	}
}

// listenOps opens the status socket (mode 0600: status names images) and,
// if configured, the metrics TCP address.
func listenOps(ctx context.Context, cfg config.Config) ([]net.Listener, error) {
	sl, err := sockets.Listen(ctx, "unix", cfg.StatusSocket(), 0o600, 0o711)
	if err != nil {
		return nil, fmt.Errorf("status socket: %w", err)
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
