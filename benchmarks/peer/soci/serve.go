package main

// soci-peer serve: soci-snapshotter itself (its service, fs and snapshot
// packages) as a containerd proxy snapshotter, so that the cold-start
// harness runs the system a user would run beside lazysnap. Upstream's
// daemon, soci-snapshotter-grpc, is a module of its own that the Go module
// proxy here does not serve; this is our wiring of the same library, with
// upstream's flags (--address, --root, --config, --log-level) and its
// configuration file format (config.NewConfigFromToml, its defaults for
// whatever the file leaves out).

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	golog "log"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"github.com/awslabs/soci-snapshotter/config"
	socifs "github.com/awslabs/soci-snapshotter/fs"
	"github.com/awslabs/soci-snapshotter/metadata"
	"github.com/awslabs/soci-snapshotter/service"
	"github.com/awslabs/soci-snapshotter/service/keychain/dockerconfig"
	"github.com/awslabs/soci-snapshotter/service/resolver"
	"github.com/awslabs/soci-snapshotter/ztoc"
	snapshotsapi "github.com/containerd/containerd/api/services/snapshots/v1"
	"github.com/containerd/containerd/v2/contrib/snapshotservice"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	"github.com/containerd/log"
	"github.com/sirupsen/logrus"
	bolt "go.etcd.io/bbolt"
	"google.golang.org/grpc"
)

// errServe prefixes serve's errors.
var errServe = errors.New("serve")

// serve runs the snapshotter until SIGINT or SIGTERM; then it stops the
// gRPC server and closes the snapshotter, which unmounts every snapshot it
// mounted (upstream keeps them on SIGTERM for a restart; a benchmark run
// wants nothing left behind).
func serve(args []string) error {
	fl := flag.NewFlagSet("serve", flag.ContinueOnError)
	address := fl.String("address", "/run/soci-snapshotter-grpc/soci-snapshotter-grpc.sock", "unix socket to serve on")
	root := fl.String("root", config.DefaultSociSnapshotterRootPath, "root directory")
	cfgPath := fl.String("config", config.DefaultConfigPath, "TOML configuration file (soci-snapshotter's format)")
	level := fl.String("log-level", "info", "log level")
	if err := fl.Parse(args); err != nil {
		return err
	}
	lvl, err := logrus.ParseLevel(*level)
	if err != nil {
		return fmt.Errorf("%w: %w", errServe, err)
	}
	logrus.SetLevel(lvl)
	logrus.SetFormatter(&logrus.JSONFormatter{TimestampFormat: log.RFC3339NanoFixed})

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	ctx = log.WithLogger(ctx, log.L)
	// go-fuse logs through the standard library's logger
	golog.SetOutput(log.G(ctx).WriterLevel(logrus.DebugLevel))

	cfg, err := config.NewConfigFromToml(*cfgPath)
	if err != nil {
		return fmt.Errorf("%w: %w", errServe, err)
	}
	if err := os.MkdirAll(*root, 0o700); err != nil {
		return fmt.Errorf("%w: %w", errServe, err)
	}
	if !cfg.SkipCheckSnapshotterSupported {
		if err := service.Supported(*root); err != nil {
			return fmt.Errorf("%w: overlayfs: %w", errServe, err)
		}
	}
	store, closeStore, err := metadataStore(*root, cfg)
	if err != nil {
		return fmt.Errorf("%w: metadata store: %w", errServe, err)
	}
	defer closeStore()
	sn, err := service.NewSociSnapshotterService(ctx, *root, &cfg.ServiceConfig,
		service.WithCredsFuncs([]resolver.Credential{dockerconfig.NewDockerConfigKeychain(ctx)}...),
		service.WithFilesystemOptions(socifs.WithMetadataStore(store)))
	if err != nil {
		return fmt.Errorf("%w: %w", errServe, err)
	}
	defer sn.Close()

	if err := os.MkdirAll(filepath.Dir(*address), 0o700); err != nil {
		return fmt.Errorf("%w: %w", errServe, err)
	}
	os.Remove(*address)
	l, err := net.Listen("unix", *address)
	if err != nil {
		return fmt.Errorf("%w: %w", errServe, err)
	}
	srv := grpc.NewServer(grpc.ChainUnaryInterceptor(unaryNamespace), grpc.ChainStreamInterceptor(streamNamespace))
	snapshotsapi.RegisterSnapshotsServer(srv, snapshotservice.FromSnapshotter(sn))
	served := make(chan error, 1)
	go func() { served <- srv.Serve(l) }()
	log.G(ctx).WithField("address", *address).Info("soci-peer serve: started")
	select {
	case <-ctx.Done():
	case err := <-served:
		return fmt.Errorf("%w: %w", errServe, err)
	}
	// in-flight calls get a moment; then the server stops regardless
	stopped := make(chan struct{})
	go func() { srv.GracefulStop(); close(stopped) }()
	select {
	case <-stopped:
	case <-time.After(5 * time.Second):
		srv.Stop()
		<-stopped
	}
	<-served
	return nil
}

// metadataStore is the store config.MetadataStore names, as upstream's
// daemon opens it: "db" one bbolt database under root (closed by the
// returned func), "db-multi" one per layer under root/metadata.
func metadataStore(root string, cfg *config.Config) (metadata.Store, func() error, error) {
	opts := bolt.Options{NoFreelistSync: true, InitialMmapSize: 64 << 20, FreelistType: bolt.FreelistMapType}
	switch cfg.MetadataStore {
	case "", "db":
		opts.NoSync = cfg.MetadataDBNoSync
		db, err := bolt.Open(filepath.Join(root, "metadata.db"), 0o600, &opts)
		if err != nil {
			return nil, nil, err
		}
		chunk := cfg.MetadataInsertionChunkSize
		return func(sr *io.SectionReader, toc ztoc.TOC, o ...metadata.Option) (metadata.Reader, error) {
			if chunk > 0 {
				o = append(o, metadata.WithInsertionChunkSize(chunk))
			}
			return metadata.NewReader(db, sr, toc, o...)
		}, db.Close, nil
	case "db-multi":
		return metadata.NewMultiReader(filepath.Join(root, "metadata"), metadata.DBMultiOptions{BoltOptions: &opts}),
			func() error { return nil }, nil
	}
	return nil, nil, fmt.Errorf("metadata_store %q: want db or db-multi", cfg.MetadataStore)
}

// unaryNamespace and streamNamespace carry the namespace containerd sends
// in the call's incoming metadata over to the outgoing context, where
// soci's calls back into containerd (its content store) look for it.
func unaryNamespace(ctx context.Context, req any, _ *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
	if ns, ok := namespaces.Namespace(ctx); ok {
		ctx = namespaces.WithNamespace(ctx, ns)
	}
	return h(ctx, req)
}

func streamNamespace(srv any, ss grpc.ServerStream, _ *grpc.StreamServerInfo, h grpc.StreamHandler) error {
	if ns, ok := namespaces.Namespace(ss.Context()); ok {
		ss = nsStream{ServerStream: ss, ctx: namespaces.WithNamespace(ss.Context(), ns)}
	}
	return h(srv, ss)
}

type nsStream struct {
	grpc.ServerStream
	ctx context.Context
}

func (s nsStream) Context() context.Context { return s.ctx }
