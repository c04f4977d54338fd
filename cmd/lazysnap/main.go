// Command lazysnap is the lazysnap binary: the snapshotter daemon and the
// tools around it. Each subcommand is thin wiring over a library package.
package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/containerd/log"
	"github.com/lazysnap/lazysnap/internal/logging"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

type command struct {
	name, summary string
	run           func(ctx context.Context, args []string, stdout, stderr io.Writer) error
}

func commands() []command {
	return []command{
		{"convert", "convert an image (registry, OCI layout directory or archive) to eStargz or zstd:chunked", runConvert},
		{"index", "give an image (registry or OCI layout directory) SOCI indexes, its gzip layers unchanged", runIndex},
		{"version", "print the version", func(_ context.Context, _ []string, stdout, _ io.Writer) error {
			_, err := fmt.Fprintln(stdout, "lazysnap", version)
			return err
		}},
		{"serve", "run the snapshotter daemon (containerd proxy plugin)", runServe},
		{"fuse-manager", "serve the FUSE layer mounts for serve (serve starts it)", runFuseManager},
		{"fd-keeper", "hold the FUSE mounts' descriptors for the fuse manager's successor (the manager starts it)", runFDKeeper},
		{"pull", "pull an image through containerd, its eStargz, zstd:chunked and SOCI-indexed layers lazily", runPull},
		{"status", "show layers, fetch progress and cache use of a running serve", runStatus},
		{"profile", "list, show, push or remove learned prefetch profiles", runProfile},
	}
}

// errUsage makes main print usage and exit 2.
type errUsage struct{ msg string }

func (e errUsage) Error() string { return e.msg }

func usage(w io.Writer) {
	fmt.Fprintln(w, "usage: lazysnap COMMAND [flags] [args]")
	fmt.Fprintln(w, "\ncommands:")
	for _, c := range commands() {
		fmt.Fprintf(w, "  %-13s %s\n", c.name, c.summary)
	}
	fmt.Fprintln(w, "\nRun 'lazysnap COMMAND -h' for a command's flags.")
}

func main() {
	// containerd's packages and snapshotter/ log through log.G, which
	// falls back to log.L: into the stream, format and level of run's logger
	log.L = logging.Containerd(logging.NewHandler(os.Stderr))
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		usage(stderr)
		if len(args) == 0 {
			return 2
		}
		return 0
	}
	// the keeper must outlive a stop while it holds live mounts
	ctx, stop := signalContext(stderr, args[0] != "fd-keeper")
	defer stop()
	logger := slog.New(logging.NewHandler(stderr))
	ctx = withLogger(ctx, logger)
	for _, c := range commands() {
		if c.name != args[0] {
			continue
		}
		err := c.run(ctx, args[1:], stdout, stderr)
		if u, ok := err.(errUsage); ok {
			fmt.Fprintf(stderr, "lazysnap %s: %s\n", c.name, u.msg)
			return 2
		}
		if err != nil {
			fmt.Fprintf(stderr, "lazysnap %s: %v\n", c.name, err)
			return 1
		}
		return 0
	}
	fmt.Fprintf(stderr, "lazysnap: unknown command %q\n\n", args[0])
	usage(stderr)
	return 2
}

// shutdownBound is how long a command has to exit after SIGTERM or
// SIGINT, whatever is in flight (a call stuck on a hung FUSE mount); a
// second signal ends it at once.
const shutdownBound = 10 * time.Second

// signalContext is cancelled by the first SIGTERM or SIGINT; with bound,
// the process exits shutdownBound later if it is still running.
func signalContext(stderr io.Writer, bound bool) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithCancel(context.Background())
	sigc := make(chan os.Signal, 1)
	signal.Notify(sigc, os.Interrupt, syscall.SIGTERM)
	go func() {
		defer signal.Stop(sigc)
		select {
		case sig := <-sigc:
			cancel()
			signal.Reset(os.Interrupt, syscall.SIGTERM) // a second one kills
			if bound {
				time.AfterFunc(shutdownBound, func() {
					fmt.Fprintf(stderr, "lazysnap: still running %v after %v: exiting\n", shutdownBound, sig)
					os.Exit(1)
				})
			}
		case <-ctx.Done():
		}
	}()
	return ctx, cancel
}

type loggerKey struct{}

func withLogger(ctx context.Context, l *slog.Logger) context.Context {
	return context.WithValue(ctx, loggerKey{}, l)
}

// logger returns the context's logger.
func logger(ctx context.Context) *slog.Logger {
	if l, ok := ctx.Value(loggerKey{}).(*slog.Logger); ok {
		return l
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}
