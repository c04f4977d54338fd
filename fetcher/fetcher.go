package fetcher

import (
	"context"
	"errors"
	"fmt"
	"hash"
	"io"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/containerd/containerd/v2/core/remotes"
	"github.com/containerd/containerd/v2/core/remotes/docker"
	"github.com/containerd/containerd/v2/core/remotes/docker/config"
	remoteerrors "github.com/containerd/containerd/v2/core/remotes/errors"
	"github.com/containerd/containerd/v2/pkg/reference"
	"github.com/containerd/errdefs"
	"github.com/containerd/log"
	"github.com/lazysnap/lazysnap/internal/descriptor"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"github.com/sirupsen/logrus"
)

// Fetcher gives verified, cached access to registry blobs. It is safe for
// concurrent use. Create it with New; Close releases idle connections.
type Fetcher struct {
	cfg      Config
	hostsFn  docker.RegistryHosts
	resolver remotes.Resolver
	quiet    *log.Entry
	disk     *diskCache
	mem      *memCache
	flights  flightGroup

	mu    sync.Mutex
	hosts map[string][]docker.RegistryHost // authorizers: chainAuthorizer
	creds credChain
	// idle are the clients' own transports, which hold their connections:
	// Close closes them directly, for a client's Transport is wrapped (by
	// meteredTransport, Config.WrapTransport, containerd's HTTP fallback)
	// in RoundTrippers that do not pass CloseIdleConnections on
	idle   []interface{ CloseIdleConnections() }
	hstate map[string]*hostState

	hits, misses, memHits, writeErrors atomic.Int64
	errCounts                          errorCounts // see ErrorStats
}

// hostState is the per-host (registry, mirror or blob storage) limiter and
// counters.
type hostState struct {
	sem             chan struct{}
	requests        atomic.Int64
	bytes           atomic.Int64
	mirrorFallbacks atomic.Int64
	noMultiRange    atomic.Bool
	restUntil       atomic.Int64 // unix ns: a mirror that failed is passed over until then
}

// New creates a Fetcher. It opens (and scans) the disk cache.
func New(cfg Config) (*Fetcher, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	lg := logrus.New()
	lg.SetOutput(io.Discard)
	lg.SetLevel(logrus.PanicLevel)
	f := &Fetcher{
		cfg:    cfg,
		quiet:  logrus.NewEntry(lg),
		mem:    newMemCache(cfg.MemCacheMaxBytes),
		hosts:  map[string][]docker.RegistryHost{},
		hstate: map[string]*hostState{},
	}
	f.disk, err = openDiskCache(cfg.CacheDir, cfg.CacheMaxBytes)
	if err != nil {
		return nil, err
	}
	f.creds = append(credChain(nil), cfg.Credentials...)
	f.creds = append(f.creds, &dockerSource{d: dockerCredentials{path: cfg.DockerConfigPath}})
	opts := config.HostOptions{UpdateClient: f.updateClient}
	if cfg.HostsDir != "" {
		opts.HostDir = config.HostDirFromRoot(cfg.HostsDir)
	}
	f.hostsFn = config.ConfigureHosts(log.WithLogger(context.Background(), f.quiet), opts)
	f.resolver = docker.NewResolver(docker.ResolverOptions{Hosts: f.registryHosts})
	return f, nil
}

// Close closes idle connections. Blobs must not be used afterwards.
func (f *Fetcher) Close() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, c := range f.idle {
		c.CloseIdleConnections()
	}
	return nil
}

// updateClient is containerd's UpdateClient hook: it sizes the idle pool
// and wraps the transport with the per-host limiter and counters.
func (f *Fetcher) updateClient(c *http.Client) error {
	if tr, ok := c.Transport.(*http.Transport); ok {
		tr.MaxIdleConnsPerHost = f.cfg.MaxConnsPerHost * 2
		tr.MaxIdleConns = 100
		tr.IdleConnTimeout = 90 * time.Second
	}
	base := c.Transport
	if f.cfg.WrapTransport != nil {
		base = f.cfg.WrapTransport(base)
	}
	f.mu.Lock()
	if ci, ok := c.Transport.(interface{ CloseIdleConnections() }); ok {
		f.idle = append(f.idle, ci)
	}
	f.mu.Unlock()
	c.Transport = &meteredTransport{base: base, f: f}
	return nil
}

// registryHosts is containerd's hosts function, memoised per registry host
// so connection pools and the authorizer's token cache are reused.
func (f *Fetcher) registryHosts(host string) ([]docker.RegistryHost, error) {
	f.mu.Lock()
	hs, ok := f.hosts[host]
	f.mu.Unlock()
	if ok {
		return hs, nil
	}
	hs, err := f.hostsFn(host)
	if err != nil {
		return nil, fmt.Errorf("%w: hosts configuration for %s: %w", ErrInvalid, host, err)
	}
	hs = uniqueHosts(hs)
	for i := range hs {
		hs[i].Authorizer = newChainAuthorizer(f.creds, hs[i].Client, hs[i].Header)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if cur, ok := f.hosts[host]; ok {
		return cur, nil
	}
	f.hosts[host] = hs
	return hs, nil
}

// uniqueHosts drops the hosts that repeat an earlier one's endpoint
// (scheme, host and path), adding their capabilities to it: a hosts.toml
// that names one endpoint as mirror and as server (which containerd 1.6's
// ctr, ignoring server, needs) would otherwise have every request that
// fails there, a referrers or tag lookup's 404 included, sent to it again.
func uniqueHosts(hs []docker.RegistryHost) []docker.RegistryHost {
	out := hs[:0:0]
	at := map[string]int{}
	for _, h := range hs {
		key := h.Scheme + "://" + h.Host + h.Path
		if i, ok := at[key]; ok {
			out[i].Capabilities |= h.Capabilities
			continue
		}
		at[key] = len(out)
		out = append(out, h)
	}
	return out
}

func (f *Fetcher) host(h string) *hostState {
	f.mu.Lock()
	defer f.mu.Unlock()
	s, ok := f.hstate[h]
	if !ok {
		s = &hostState{sem: make(chan struct{}, f.cfg.MaxConnsPerHost)}
		f.hstate[h] = s
	}
	return s
}

// quietCtx makes containerd's code, which logs through the context, silent.
func (f *Fetcher) quietCtx(ctx context.Context) context.Context {
	return log.WithLogger(ctx, f.quiet)
}

// refCtx is quietCtx for requests made for the image ref, whose
// credentials the hosts' authorizers look up.
func (f *Fetcher) refCtx(ctx context.Context, ref string) context.Context {
	return f.quietCtx(withRef(ctx, ref))
}

// HostStats are the counters of one host.
type HostStats struct {
	Requests int64 // HTTP requests sent (including token and redirect hops)
	Bytes    int64 // response body bytes read
	// MirrorFallbacks counts operations that failed on this host, a
	// mirror, and went on to the next host (the mirror passed over while
	// it rests after a failure included).
	MirrorFallbacks int64
}

// Stats returns per-host request and byte counters, keyed by host[:port].
func (f *Fetcher) Stats() map[string]HostStats {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := make(map[string]HostStats, len(f.hstate))
	for h, s := range f.hstate {
		out[h] = HostStats{Requests: s.requests.Load(), Bytes: s.bytes.Load(), MirrorFallbacks: s.mirrorFallbacks.Load()}
	}
	return out
}

// CacheStats describes cache usage and effectiveness.
type CacheStats struct {
	Bytes      int64 // disk cache bytes in use (payload and trailers)
	Entries    int64 // disk cache entries
	MaxBytes   int64 // disk cache cap (0 when disabled)
	MemBytes   int64 // memory cache bytes
	MemEntries int64 // memory cache entries
	Hits       int64 // lookups served from memory or disk
	MemHits    int64 // of which from memory
	Misses     int64 // lookups that went to the network
	Evictions  int64 // disk entries evicted for space
	Corrupt    int64 // damaged disk entries detected and dropped
	WriteErrs  int64 // failed disk cache writes (the read still succeeded)
}

// CacheUsage reports cache usage and counters.
func (f *Fetcher) CacheUsage() CacheStats {
	d := f.disk.stats()
	mb, me, _ := f.mem.stats()
	s := CacheStats{
		Bytes: d.bytes, Entries: d.entries, MemBytes: mb, MemEntries: me,
		Hits: f.hits.Load(), MemHits: f.memHits.Load(), Misses: f.misses.Load(),
		Evictions: d.evictions, Corrupt: d.corrupt, WriteErrs: f.writeErrors.Load(),
	}
	if f.disk != nil {
		s.MaxBytes = f.disk.max
	}
	return s
}

func (f *Fetcher) cacheGet(k chunkKey) ([]byte, bool) {
	if b, ok := f.mem.get(k); ok {
		f.hits.Add(1)
		f.memHits.Add(1)
		return b, true
	}
	if b, ok := f.disk.get(k); ok {
		f.hits.Add(1)
		f.mem.put(k, b)
		return b, true
	}
	return nil, false
}

func (f *Fetcher) cachePut(k chunkKey, b []byte) {
	f.mem.put(k, b)
	if err := f.disk.put(k, b); err != nil {
		f.writeErrors.Add(1)
	}
}

// Resolve resolves an image reference to its (canonical) name and the
// descriptor of its manifest or index, using the hosts configuration
// (mirrors first). Retries transient failures.
func (f *Fetcher) Resolve(ctx context.Context, ref string) (string, ocispec.Descriptor, error) {
	var (
		name string
		desc ocispec.Descriptor
	)
	release, err := f.retry(ctx, func(ctx context.Context) error {
		var err error
		name, desc, err = f.resolver.Resolve(f.refCtx(ctx, ref), ref)
		return mapContainerdErr(err)
	})
	if err != nil {
		return "", ocispec.Descriptor{}, f.countError(opError("resolve "+ref, refHostname(ref), "", err))
	}
	release()
	if err := descriptor.Validate(desc); err != nil {
		return "", ocispec.Descriptor{}, f.countError(fmt.Errorf("%w: resolve %s: the registry answered %w", ErrBadResponse, ref, err))
	}
	return name, desc, nil
}

// Fetch opens a whole blob, manifest or index (small objects: manifests,
// configs) named by desc in the repository of ref. The returned reader
// verifies size and digest: its final Read returns ErrDigestMismatch when
// the content does not match desc. Retries transient failures to open.
func (f *Fetcher) Fetch(ctx context.Context, ref string, desc ocispec.Descriptor) (io.ReadCloser, error) {
	if err := descriptor.Validate(desc); err != nil {
		return nil, fmt.Errorf("%w: fetch: %w", ErrInvalid, err)
	}
	var rc io.ReadCloser
	release, err := f.retry(ctx, func(ctx context.Context) error {
		fe, err := f.resolver.Fetcher(ctx, ref)
		if err != nil {
			return mapContainerdErr(err)
		}
		rc, err = fe.Fetch(f.refCtx(ctx, ref), desc)
		return mapContainerdErr(err)
	})
	if err != nil {
		return nil, f.countError(opError("fetch "+ref, refHostname(ref), desc.Digest.String(), err))
	}
	return &verifyingReader{rc: rc, desc: desc, h: desc.Digest.Algorithm().Hash(), release: release}, nil
}

// opError wraps a failure of a containerd-driven operation as a
// *RequestError (context errors are wrapped with the operation only).
func opError(op, host, dgst string, err error) error {
	var ae *attemptError
	if !errors.As(err, &ae) {
		return fmt.Errorf("fetcher: %s: %w", op, err)
	}
	return &RequestError{Op: op, Host: host, Digest: dgst, Status: ae.status, Kind: ae.kind, Err: ae.err}
}

func refHostname(ref string) string {
	spec, err := reference.Parse(ref)
	if err != nil {
		return ""
	}
	return spec.Hostname()
}

// mapContainerdErr translates errors of containerd's resolver and fetcher
// into this package's sentinels, keeping the cause.
func mapContainerdErr(err error) error {
	if err == nil {
		return nil
	}
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return err
	}
	var us remoteerrors.ErrUnexpectedStatus
	switch {
	case errdefs.IsNotFound(err):
		return attemptErr(ErrNotFound, 0, err)
	case errors.Is(err, docker.ErrInvalidAuthorization):
		return attemptErr(ErrUnauthorized, 0, err)
	case errors.Is(err, reference.ErrInvalid), errors.Is(err, reference.ErrObjectRequired),
		errors.Is(err, reference.ErrHostnameRequired):
		return attemptErr(ErrInvalid, 0, err)
	case errors.As(err, &us):
		k := statusError(us.StatusCode)
		k.err = err
		return k
	}
	return classifyTransport(err)
}

// verifyingReader checks size and digest of a whole-blob stream.
type verifyingReader struct {
	rc      io.ReadCloser
	desc    ocispec.Descriptor
	h       hash.Hash
	n       int64
	err     error
	release func() // ends the request's attempt context
}

func (v *verifyingReader) Read(p []byte) (int, error) {
	if v.err != nil {
		return 0, v.err
	}
	n, err := v.rc.Read(p)
	v.h.Write(p[:n])
	v.n += int64(n)
	if v.desc.Size > 0 && v.n > v.desc.Size {
		v.err = fmt.Errorf("%w: %s: more than %d bytes", ErrDigestMismatch, v.desc.Digest, v.desc.Size)
		return 0, v.err
	}
	if err == io.EOF {
		got := digest.NewDigest(v.desc.Digest.Algorithm(), v.h)
		switch {
		case v.desc.Size > 0 && v.n != v.desc.Size:
			v.err = fmt.Errorf("%w: %s: got %d bytes, want %d", ErrDigestMismatch, v.desc.Digest, v.n, v.desc.Size)
		case got != v.desc.Digest:
			v.err = fmt.Errorf("%w: got %s, want %s", ErrDigestMismatch, got, v.desc.Digest)
		default:
			v.err = io.EOF
		}
		return n, v.err
	}
	if err != nil {
		v.err = attemptErr(ErrUnavailable, 0, err)
		return n, v.err
	}
	return n, nil
}

func (v *verifyingReader) Close() error {
	err := v.rc.Close()
	v.release()
	return err
}

// Compile-time interface checks.
var (
	_ io.ReaderAt   = (*Blob)(nil)
	_ io.ReadCloser = (*verifyingReader)(nil)
	_ error         = (*RequestError)(nil)
)
