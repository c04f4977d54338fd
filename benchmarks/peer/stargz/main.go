// Command stargz-peer serves Stargz Snapshotter (the library of
// github.com/containerd/stargz-snapshotter) as a containerd proxy
// snapshotter, so that the cold-start benchmark can hold lazysnap against
// it: LAZYSNAP_BENCH_PEER=<this binary> (benchmarks/README.md). Upstream's
// own daemon, containerd-stargz-grpc, lives in a module the Go module proxy
// here does not serve; this is our wiring of the same library, with the
// flags the harness passes (--address, --root, --config, --log-level) and
// upstream's configuration file format.
//
// It is a separate module so that lazysnap itself never depends on it.
// Build: cd benchmarks/peer/stargz && go build -o /usr/local/bin/stargz-peer .
package main

import (
	"context"
	"flag"
	"fmt"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"

	snapshotsapi "github.com/containerd/containerd/api/services/snapshots/v1"
	"github.com/containerd/containerd/v2/contrib/snapshotservice"
	"github.com/containerd/log"
	"github.com/containerd/stargz-snapshotter/service"
	"github.com/containerd/stargz-snapshotter/service/keychain/dockerconfig"
	"github.com/pelletier/go-toml/v2"
	"google.golang.org/grpc"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "stargz-peer:", err)
		os.Exit(1)
	}
}

func run() error {
	address := flag.String("address", "/run/containerd-stargz-grpc/containerd-stargz-grpc.sock", "unix socket to serve on")
	root := flag.String("root", "/var/lib/containerd-stargz-grpc", "root directory")
	configPath := flag.String("config", "", "TOML configuration file (Stargz Snapshotter's format)")
	level := flag.String("log-level", "info", "log level")
	flag.Parse()
	if err := log.SetLevel(*level); err != nil {
		return err
	}
	var cfg service.Config
	if *configPath != "" {
		b, err := os.ReadFile(*configPath)
		if err != nil {
			return err
		}
		if err := toml.Unmarshal(b, &cfg); err != nil {
			return fmt.Errorf("%s: %w", *configPath, err)
		}
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	sn, err := service.NewStargzSnapshotterService(ctx, *root, &cfg, service.WithCredsFuncs(dockerconfig.NewDockerconfigKeychain(ctx)))
	if err != nil {
		return err
	}
	defer sn.Close()
	if err := os.MkdirAll(filepath.Dir(*address), 0o700); err != nil {
		return err
	}
	os.Remove(*address)
	l, err := net.Listen("unix", *address)
	if err != nil {
		return err
	}
	srv := grpc.NewServer()
	snapshotsapi.RegisterSnapshotsServer(srv, snapshotservice.FromSnapshotter(sn))
	go func() {
		<-ctx.Done()
		srv.GracefulStop()
	}()
	return srv.Serve(l)
}
