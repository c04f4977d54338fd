package config

import (
	"errors"
	"fmt"
	"path/filepath"
	"strings"

	"github.com/lazysnap/lazysnap/fetcher"
	"github.com/lazysnap/lazysnap/internal/logging"
	"github.com/lazysnap/lazysnap/internal/tomlconfig"
)

// Config is lazysnap's configuration file, as serve, fuse-manager, status
// and profile read it.
type Config struct {
	// Root holds the snapshots, the chunk cache and layer contents.
	Root string `toml:"root"`
	// Address is the unix socket containerd's proxy plugin connects to.
	Address string `toml:"address"`
	// StatusAddress is the unix socket serving GET /status (JSON) and
	// GET /metrics over HTTP; empty means status.sock beside Address.
	StatusAddress string `toml:"status_address"`
	// MetricsAddress is a TCP address (such as "127.0.0.1:9119") that also
	// serves /metrics (and /status with MetricsServeStatus: it names images
	// and repositories); empty, the default, serves them only on the status
	// socket.
	MetricsAddress     string `toml:"metrics_address"`
	MetricsServeStatus bool   `toml:"metrics_serve_status"`
	// MemoryLimit is a soft cap on the daemon's Go heap in bytes (the Go
	// runtime's GOMEMLIMIT); 0 leaves the runtime's default. The chunk
	// caches are bounded separately (cache.memory_bytes, cache.max_bytes).
	MemoryLimit int64 `toml:"memory_limit"`
	// Registry access: a containerd hosts directory (shared with
	// containerd) and a Docker config for credentials.
	Registry struct {
		HostsDir     string `toml:"hosts_dir"`
		DockerConfig string `toml:"docker_config"`
		// kubelet's --image-credential-provider-config and
		// --image-credential-provider-bin-dir: credential provider
		// plugins, asked after CRI pulls' auths, before the Docker config
		CredentialProviderConfig string `toml:"credential_provider_config"`
		CredentialProviderBinDir string `toml:"credential_provider_bin_dir"`
	} `toml:"registry"`
	// CRI: the image service kubelet is pointed at (--image-service-endpoint)
	// so that lazysnap gets the auth of its pulls (package cri), listening
	// on ListenAddress (off when empty); ImageServiceAddress is its old
	// name, accepted with a warning (CRIListenAddress).
	CRI struct {
		ListenAddress        string `toml:"listen_address"`
		ImageServiceAddress  string `toml:"image_service_address" deprecated:"listen_address"`
		ContainerdCRIAddress string `toml:"containerd_cri_address"`
	} `toml:"cri"`
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
		NoPrefetch            bool                `toml:"no_prefetch"`
		NoBackground          bool                `toml:"no_background"`
		BackgroundConcurrency int                 `toml:"background_concurrency"`
		ReadAhead             int                 `toml:"read_ahead_chunks"`
		Timeout               tomlconfig.Duration `toml:"timeout"`
		StallTimeout          tomlconfig.Duration `toml:"stall_timeout"`   // fetcher.Config.StallTimeout
		RequestTimeout        tomlconfig.Duration `toml:"request_timeout"` // fetcher.Config.RequestTimeout
		MaxConnsPerHost       int                 `toml:"max_conns_per_host"`
		// fetch.Options: background fetch yields the link to on-demand reads
		BackgroundQuiet    tomlconfig.Duration `toml:"background_quiet"`
		BackgroundInflight int64               `toml:"background_inflight_bytes"`
		NoPreempt          bool                `toml:"no_preempt"`
		ReadAround         int64               `toml:"read_around_bytes"`
		NoPredict          bool                `toml:"no_predict"`
		// VerifyBlob checks each complete layer against its blob digest
		// and marks one that differs bad (remote.Options.VerifyBlob).
		VerifyBlob bool `toml:"verify_blob"`
	} `toml:"fetch"`
	// Profile: learned prefetch profiles (remote.ProfileOptions).
	Profile struct {
		Record      bool                `toml:"record"`
		Fetch       bool                `toml:"fetch"`
		Publish     bool                `toml:"publish"`
		Quiet       tomlconfig.Duration `toml:"quiet"`
		MaxDuration tomlconfig.Duration `toml:"max_duration"`
		MaxChunks   int                 `toml:"max_chunks"`
	} `toml:"profile"`
	// Log is the daemon's log level and format (--log-level and
	// --log-format override it); containerd's log.G records obey it too.
	Log logging.Config `toml:"log"`
	// Pull: layers that are not lazy, pulled by lazysnap at line rate
	// (remote.PullOptions) instead of by containerd.
	Pull struct {
		LineRate    bool  `toml:"line_rate"`   // off: containerd pulls them
		Connections int   `toml:"connections"` // range requests per layer at once, when they pay
		PartBytes   int64 `toml:"part_bytes"`  // bytes of one
		Concurrency int   `toml:"concurrency"` // layers at once
		Index       bool  `toml:"index"`       // keep each gzip layer's zTOC: its next mount is lazy
		// ContentStore also writes each blob into containerd's content
		// store at ContainerdAddress (containerd 1.7 and later: 1.6 does
		// not name the namespace to proxy snapshotters)
		ContentStore      bool   `toml:"content_store"`
		ContainerdAddress string `toml:"containerd_address"`
	} `toml:"pull"`
	// Index caps what a layer's in-memory index may take; a layer past a
	// cap is pulled the ordinary way (reason not-lazy).
	Index struct {
		MaxEntries     int   `toml:"max_entries"`      // TOC entries of one layer; 0 = estargz.DefaultMaxEntries
		MaxMemoryBytes int64 `toml:"max_memory_bytes"` // indexes of all mounted layers, and a SOCI zTOC being decoded; 0 = no cap
	} `toml:"index"`
	Soci struct {
		// AllowV1Indexes uses SOCI v1 indexes, which come from the
		// manifest's referrers (remote.WithSociV1); off by default.
		AllowV1Indexes bool `toml:"allow_v1_indexes"`
		// PublishRepository, if set ("registry.example/lazysnap-indexes"),
		// receives a v1 SOCI index of each image whose gzip layers a
		// line-rate pull indexed (remote.PublishOptions); off when empty.
		PublishRepository string `toml:"publish_repository"`
		// TrustedRepositories are repositories whose v1 SOCI indexes of an
		// image are used even without AllowV1Indexes
		// (remote.WithTrustedSociRepositories): whoever can push to one
		// chooses what lazy mounts serve until each layer is checked.
		TrustedRepositories []string `toml:"trusted_repositories"`
	} `toml:"soci"`
}

// StatusSocket is where serve listens for /status and /metrics.
func (c Config) StatusSocket() string {
	if c.StatusAddress != "" {
		return c.StatusAddress
	}
	return filepath.Join(filepath.Dir(c.Address), StatusSocketName)
}

// ManagerSocket is where the fuse manager listens.
func (c Config) ManagerSocket() string {
	if c.FuseManager.Address != "" {
		return c.FuseManager.Address
	}
	return filepath.Join(c.Root, ManagerSocketName)
}

// Default is the configuration of an empty file.
func Default() Config {
	var c Config
	c.Root = "/var/lib/lazysnap"
	c.Address = "/run/lazysnap/lazysnap.sock"
	c.Registry.HostsDir = "/etc/containerd/certs.d"
	c.Registry.DockerConfig = fetcher.DefaultDockerConfigPath()
	c.FuseManager.Enable = true
	c.CRI.ContainerdCRIAddress = "/run/containerd/containerd.sock"
	c.Profile.Record, c.Profile.Fetch = true, true
	c.Fetch.VerifyBlob = true
	c.Pull.LineRate, c.Pull.Index = true, true
	c.Pull.ContainerdAddress = "/run/containerd/containerd.sock"
	return c
}

// DefaultPath is the configuration file serve, fuse-manager, status and
// profile read when --config is not given; a missing default file means
// the defaults (as containerd treats its config.toml), a missing file named
// by --config is an error.
const DefaultPath = "/etc/lazysnap/config.toml"

// StatusSocketName is the status socket's name beside the gRPC socket.
const StatusSocketName = "status.sock"

// ManagerSocketName is the fuse manager's socket in the root directory.
const ManagerSocketName = "fusemanager.sock"

// Load reads the file at path over the defaults, strictly (a key Config
// does not have is an error naming it); "" is the defaults.
func Load(path string) (Config, error) {
	c := Default()
	if path == "" {
		return c, nil
	}
	return c, tomlconfig.DecodeFile(path, &c)
}

// ErrInvalid is the error of values that decode but may not go together
// (CRIListenAddress); decoding errors are tomlconfig's.
var ErrInvalid = errors.New("config")

// CRIListenAddress is where the CRI image service listens ("" = off),
// from [cri] listen_address or its old name image_service_address (with
// a warning). It must not be containerd's CRI socket, where the calls go:
// nydus-snapshotter's key of that old name is the socket it talks to.
func (c Config) CRIListenAddress() (addr, warning string, err error) {
	cri := c.CRI
	addr = cri.ListenAddress
	if cri.ImageServiceAddress != "" {
		if addr != "" && addr != cri.ImageServiceAddress {
			return "", "", fmt.Errorf("%w: [cri] listen_address %q and its old name image_service_address %q differ: keep listen_address", ErrInvalid, addr, cri.ImageServiceAddress)
		}
		addr = cri.ImageServiceAddress
		warning = "[cri] image_service_address is the old name of listen_address (where lazysnap listens for kubelet, not containerd's socket): rename it"
	}
	unixPath := func(a string) string { return filepath.Clean(strings.TrimPrefix(a, "unix://")) }
	if addr != "" && unixPath(addr) == unixPath(cri.ContainerdCRIAddress) {
		return "", "", fmt.Errorf("%w: [cri] listen_address %q is containerd_cri_address, containerd's CRI socket lazysnap forwards to: it must be a socket of its own (such as /run/lazysnap/cri.sock)", ErrInvalid, addr)
	}
	return strings.TrimPrefix(addr, "unix://"), warning, nil
}
