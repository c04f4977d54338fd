package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"runtime/debug"
	"strconv"
	"time"

	"github.com/coreos/go-systemd/v22/daemon"
	"github.com/lazysnap/lazysnap/config"
	"github.com/lazysnap/lazysnap/fusemanager"
	"github.com/lazysnap/lazysnap/internal/logfile"
	"github.com/lazysnap/lazysnap/internal/sockets"
	"github.com/lazysnap/lazysnap/ops"
)

// The FUSE manager process: see package fusemanager for why it exists and
// its protocol; here are its command and how serve starts it.

// managerPIDName is the file in the root directory holding its pid.
const managerPIDName = "fusemanager.pid"

// managerLogName is the file in the root directory its output goes to
// when serve starts it (rotated by the manager: internal/logfile).
const managerLogName = "fusemanager.log"

// runFuseManager is `lazysnap fuse-manager`: serve starts it; operators
// may run it themselves (a service of its own) before serve.
func runFuseManager(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("fuse-manager", flag.ContinueOnError)
	logPath := fs.String("log-file", "", "make this file stdout and stderr, rotated at 16 MiB keeping 3 (serve passes <root>/"+managerLogName+")")
	daemonUsage(fs, stderr, "fuse-manager [flags]", `Serves the FUSE mounts of lazy layers for lazysnap serve, so that running
containers keep their files while serve restarts. serve starts one if none
answers on <root>/`+config.ManagerSocketName+`; under systemd run it as a unit of its own
(lazysnap-fuse-manager.service) with the same --config as serve. SIGTERM
unmounts every layer: stop it only after the containers.`)
	ctx, pcfg, _, err := parseDaemonFlags(ctx, fs, args, stderr)
	if err != nil || pcfg == nil {
		return err
	}
	cfg := *pcfg
	if *logPath != "" {
		// the manager outlives serve and is not under a supervisor's log
		// collection when serve starts it, so it rotates its own log: at
		// 16 MiB, keeping 3 old files (64 MiB in all), checked every 10 s
		// (a log writing faster than that is an incident anyway)
		lf := &logfile.File{Path: *logPath, MaxBytes: 16 << 20, Keep: 3, FDs: []int{1, 2}}
		if _, err := lf.Rotate(); err != nil {
			return err
		}
		if err := lf.Open(); err != nil {
			return err
		}
		go lf.Run(ctx, 10*time.Second, func(err error) {
			logger(ctx).ErrorContext(ctx, "rotating the log file", "path", *logPath, "error", err)
		})
	}
	if cfg.MemoryLimit > 0 {
		debug.SetMemoryLimit(cfg.MemoryLimit)
	}
	logger := logger(ctx).With("daemon", "fuse-manager")
	if err := os.MkdirAll(cfg.Root, 0o700); err != nil {
		return err
	}
	sock := cfg.ManagerSocket()
	if err := fusemanager.ClaimSocket(ctx, sock); err != nil {
		return err
	}
	ls, err := newLayerService(cfg, filepath.Join(cfg.Root, fusemanager.HandoverDirName), ops.NewMetrics("fuse-manager", version), logger)
	if err != nil {
		return err
	}
	defer ls.Close()
	// the mounts a predecessor left, held by the fd keeper, before serve
	// can ask about them
	keeper, err := fusemanager.OpenHolder(ctx, cfg.Root)
	if err != nil {
		logger.ErrorContext(ctx, "no fd keeper: the mounts end with this manager", "error", err)
	} else {
		by := "fd keeper"
		if _, ok := keeper.(*fusemanager.FDStore); ok {
			by = "systemd's fd store"
		}
		logger.InfoContext(ctx, "the mounts are held for the next manager", "by", by)
		ls.hfs = &fusemanager.HandoverFS{FS: ls.fs, Holder: keeper, OnError: func(msg, mountpoint string, err error) {
			logger.WarnContext(ctx, msg, "mountpoint", mountpoint, "error", err)
		}}
		n, err := ls.hfs.AdoptAll(ctx)
		if err != nil {
			logger.ErrorContext(ctx, "adopting the mounts of the previous fuse manager", "error", err)
		}
		if n > 0 {
			logger.InfoContext(ctx, "adopted the mounts of the previous fuse manager", "layers", n)
		}
	}
	l, err := sockets.Listen(ctx, "unix", sock, 0o600, 0o700)
	if err != nil {
		return err
	}
	l.RootOrOwner() // its calls mount and unmount
	pidFile := filepath.Join(cfg.Root, managerPIDName)
	if err := os.WriteFile(pidFile, []byte(strconv.Itoa(os.Getpid())+"\n"), 0o644); err != nil {
		l.Close()
		return err
	}
	defer os.Remove(pidFile)
	srv := &http.Server{Handler: ls.handler(cfg.Root), ReadHeaderTimeout: 10 * time.Second}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(l) }()
	logger.InfoContext(ctx, "fuse manager serving", "address", sock, "root", cfg.Root, "pid", os.Getpid(), "version", version)
	fmt.Fprintf(stdout, "lazysnap fuse-manager serving on %s\n", sock)
	notifySystemd(ctx, daemon.SdNotifyReady)
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	notifySystemd(ctx, daemon.SdNotifyStopping)
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	if ls.hfs != nil {
		// the keeper holds the mounts: the next manager serves them
		logger.InfoContext(ctx, "fuse manager shutting down: the fd keeper holds the mounts for the next one")
		ls.fs.Detach() // first: serve starts the next manager once this one stops answering
		srv.Shutdown(sctx)
		return nil
	}
	logger.InfoContext(ctx, "fuse manager shutting down: unmounting layers")
	srv.Shutdown(sctx)
	if err := ls.unmountAll(sctx); err != nil {
		logger.ErrorContext(ctx, "unmount at shutdown", "error", err)
	}
	return nil
}

// runFDKeeper is `lazysnap fd-keeper`: the manager starts it.
func runFDKeeper(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("fd-keeper", flag.ContinueOnError)
	fs.SetOutput(stderr)
	sock := fs.String("socket", "", "the socket to listen on")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *sock == "" {
		return errUsage{"fd-keeper: --socket is required"}
	}
	fmt.Fprintf(stdout, "lazysnap fd-keeper holding descriptors on %s\n", *sock)
	// it outlives managers; it exits once it holds nothing and its
	// manager is gone, or, after SIGTERM, once it holds nothing
	return fusemanager.RunKeeper(ctx, *sock, filepath.Join(filepath.Dir(*sock), fusemanager.KeeperPIDName), 2*time.Second)
}
