package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"runtime/debug"
	"strconv"
	"time"

	"github.com/lazysnap/lazysnap/ops"
	"github.com/lazysnap/lazysnap/snapshotter"
)

// The FUSE manager. A FUSE mount lives as long as the process that serves
// it: were the FUSE servers inside lazysnap serve, restarting serve (an
// upgrade, a crash, a config change) would leave every running container
// of a lazy image with ENOTCONN. So by default serve runs none itself: it
// starts `lazysnap fuse-manager` (in a session of its own, so that it
// outlives serve) and mounts, checks and unmounts layers through it. When
// serve restarts it finds the manager still running, and its snapshotter's
// restore keeps the live mounts (FileSystem.Check). The manager holds the
// fetcher, the caches and the mounts; serve holds the snapshots and the
// gRPC API containerd talks to.
//
// The protocol is JSON over HTTP on a unix socket (mode 0600, in the root
// directory unless fuse_manager.address says otherwise):
//
//	GET  /healthz   -> managerHealth
//	POST /mount     managerRequest -> 204, or managerError
//	POST /check     managerRequest -> 204, or managerError
//	POST /unmount   managerRequest -> 204, or managerError
//	POST /usage     managerRequest -> snapshots.Usage, or managerError
//	POST /cleanup   -> 204, or managerError
//	GET  /status    -> ops.Report (without the snapshotter's part)
//	GET  /metrics   -> Prometheus text
//
// A request's context is the caller's: when serve gives up on a Mount (its
// mount timeout, or containerd cancelling Prepare), the manager's Mount
// sees its context cancelled just as in-process.
//
// Stopping the manager (SIGTERM, SIGINT) unmounts every layer: containers
// still using them lose their files, so stop it only after them.

// managerSocketName is the manager's socket in the root directory.
const managerSocketName = "fusemanager.sock"

// managerPIDName is the file in the root directory holding its pid.
const managerPIDName = "fusemanager.pid"

// managerLogName is the file in the root directory its output goes to
// when serve starts it (rotated: logrotate.go).
const managerLogName = "fusemanager.log"

// managerRequest is the body of mount, check, unmount and usage.
type managerRequest struct {
	Mountpoint string            `json:"mountpoint"`
	Labels     map[string]string `json:"labels,omitempty"`
}

// managerError is the body of a failed call. Reason, when set, is the
// snapshotter.Reason the error wraps, so that serve counts the fallback
// under the same reason as in-process.
type managerError struct {
	Error  string `json:"error"`
	Reason string `json:"reason,omitempty"`
}

// managerHealth is GET /healthz.
type managerHealth struct {
	PID     int    `json:"pid"`
	Version string `json:"version"`
	Root    string `json:"root"`
}

// managerSocket is where the manager listens.
func (c serveConfig) managerSocket() string {
	if c.FuseManager.Address != "" {
		return c.FuseManager.Address
	}
	return filepath.Join(c.Root, managerSocketName)
}

// runFuseManager is `lazysnap fuse-manager`: serve starts it; operators
// may run it themselves (a service of its own) before serve.
func runFuseManager(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("fuse-manager", flag.ContinueOnError)
	logPath := fs.String("log-file", "", "make this file stdout and stderr, rotated at 16 MiB keeping 3 (serve passes <root>/"+managerLogName+")")
	pcfg, _, err := parseDaemonFlags(fs, args, stderr)
	if err != nil || pcfg == nil {
		return err
	}
	cfg := *pcfg
	if *logPath != "" {
		lf := &logFile{path: *logPath, max: managerLogMaxBytes, keep: managerLogKeep, fds: []int{1, 2}}
		if _, err := lf.rotate(); err != nil {
			return err
		}
		if err := lf.open(); err != nil {
			return err
		}
		go lf.run(ctx, managerLogCheck, func(err error) {
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
	sock := cfg.managerSocket()
	if err := claimSocket(ctx, sock); err != nil {
		return err
	}
	ls, err := newLayerService(cfg, ops.NewMetrics("fuse-manager", version), logger)
	if err != nil {
		return err
	}
	defer ls.Close()
	l, err := net.Listen("unix", sock)
	if err != nil {
		return err
	}
	if err := os.Chmod(sock, 0o600); err != nil {
		l.Close()
		return err
	}
	pidFile := filepath.Join(cfg.Root, managerPIDName)
	if err := os.WriteFile(pidFile, []byte(strconv.Itoa(os.Getpid())+"\n"), 0o644); err != nil {
		l.Close()
		return err
	}
	defer os.Remove(pidFile)
	srv := &http.Server{Handler: managerHandler(ls, cfg.Root), ReadHeaderTimeout: 10 * time.Second}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(l) }()
	logger.InfoContext(ctx, "fuse manager serving", "address", sock, "root", cfg.Root, "pid", os.Getpid(), "version", version)
	fmt.Fprintf(stdout, "lazysnap fuse-manager serving on %s\n", sock)
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	logger.InfoContext(ctx, "fuse manager shutting down: unmounting layers")
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	srv.Shutdown(sctx)
	if err := ls.unmountAll(sctx); err != nil {
		logger.ErrorContext(ctx, "unmount at shutdown", "error", err)
	}
	return nil
}

// claimSocket removes a stale socket at path, and refuses to start when a
// manager answers there: two managers would both serve the same root.
func claimSocket(ctx context.Context, path string) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return err
	}
	c := newManagerClient(path)
	if h, err := c.health(ctx); err == nil {
		return fmt.Errorf("a fuse manager (pid %d) already serves %s", h.PID, path)
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	return nil
}

// managerHandler serves the manager protocol for ls.
func managerHandler(ls *layerService, root string) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, managerHealth{PID: os.Getpid(), Version: version, Root: root})
	})
	call := func(fn func(ctx context.Context, req managerRequest) (any, error)) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			var req managerRequest
			if err := json.NewDecoder(io.LimitReader(r.Body, 1<<20)).Decode(&req); err != nil || req.Mountpoint == "" {
				writeJSON(w, http.StatusBadRequest, managerError{Error: fmt.Sprintf("bad request: %v", err)})
				return
			}
			out, err := fn(r.Context(), req)
			if err != nil {
				me := managerError{Error: err.Error()}
				var reason snapshotter.Reason
				if errors.As(err, &reason) {
					me.Reason = string(reason)
				}
				writeJSON(w, http.StatusInternalServerError, me)
				return
			}
			if out == nil {
				w.WriteHeader(http.StatusNoContent)
				return
			}
			writeJSON(w, http.StatusOK, out)
		}
	}
	mux.HandleFunc("POST /mount", call(func(ctx context.Context, req managerRequest) (any, error) {
		return nil, ls.fs.Mount(ctx, req.Mountpoint, req.Labels)
	}))
	mux.HandleFunc("POST /check", call(func(ctx context.Context, req managerRequest) (any, error) {
		return nil, ls.fs.Check(ctx, req.Mountpoint, req.Labels)
	}))
	mux.HandleFunc("POST /unmount", call(func(ctx context.Context, req managerRequest) (any, error) {
		return nil, ls.fs.Unmount(ctx, req.Mountpoint)
	}))
	mux.HandleFunc("POST /usage", call(func(ctx context.Context, req managerRequest) (any, error) {
		u, err := ls.fs.Usage(ctx, req.Mountpoint)
		if err != nil {
			return nil, err
		}
		return u, nil
	}))
	mux.HandleFunc("POST /cleanup", func(w http.ResponseWriter, r *http.Request) {
		if err := ls.fs.Cleanup(r.Context()); err != nil {
			writeJSON(w, http.StatusInternalServerError, managerError{Error: err.Error()})
			return
		}
		w.WriteHeader(http.StatusNoContent)
	})
	mux.Handle("GET /metrics", ls.met.Handler())
	mux.HandleFunc("GET /status", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, ls.status.Report(r.Context()))
	})
	return mux
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}
