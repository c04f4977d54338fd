package ops

import (
	"maps"
	"net/http"
	"time"

	"github.com/lazysnap/lazysnap/fs/fetch"

	"github.com/lazysnap/lazysnap/fetcher"
	"github.com/lazysnap/lazysnap/remote"
	"github.com/lazysnap/lazysnap/snapshotter"
	"github.com/opencontainers/go-digest"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Metrics is a lazysnap daemon's Prometheus registry. It is its own
// registry, not the client library's global one. Apart from the
// read-latency histogram, which the filesystem feeds as reads complete,
// every metric is read from the components' own counters when scraped
// (statsCollector), so that metrics add nothing to the hot paths.
type Metrics struct {
	reg         *prometheus.Registry
	gatherers   prometheus.Gatherers // reg, then any added by gather
	readLatency prometheus.Histogram
	lat         latency // latency.go
}

// readLatencyBuckets span a chunk served from the local cache (about a
// millisecond) to a fetch from a slow registry that is retried (a minute).
var readLatencyBuckets = []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60}

// NewMetrics returns a registry with the process metrics (go_*, process_*,
// lazysnap_build_info). daemon, when not empty, labels those, so that
// serve can merge the metrics of a fuse manager (daemon "fuse-manager")
// with its own: both processes have them.
func NewMetrics(daemon, version string) *Metrics {
	m := &Metrics{
		reg: prometheus.NewRegistry(),
		readLatency: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "lazysnap_read_fetch_wait_seconds",
			Help:    "Time FUSE reads waited for chunks to be fetched (only reads that had to wait: data not yet present).",
			Buckets: readLatencyBuckets,
		}),
		lat: newLatency(),
	}
	m.gatherers = prometheus.Gatherers{m.reg}
	var proc prometheus.Registerer = m.reg
	if daemon != "" {
		proc = prometheus.WrapRegistererWith(prometheus.Labels{"daemon": daemon}, m.reg)
	}
	build := prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "lazysnap_build_info", Help: "Always 1; the version label is lazysnap's version.",
		ConstLabels: prometheus.Labels{"version": version},
	})
	build.Set(1)
	proc.MustRegister(build, collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// ObserveRead is the filesystem's fetch.Options.OnReadLatency.
func (m *Metrics) ObserveRead(d time.Duration) { m.readLatency.Observe(d.Seconds()) }

// Register adds the components' counters, read at scrape time from src,
// and the histograms their hooks feed: where src has the layers, read
// latency and FUSE operations (fetch.Options.OnReadLatency and OnOp: the
// process serves the mounts); where it has the registries, request
// latency (fetcher.Config.WrapTransport); where it has the snapshotter,
// mount latency (snapshotter.WithOnMount).
func (m *Metrics) Register(src Sources) error {
	var cs []prometheus.Collector
	if src.Layers != nil {
		cs = append(cs, m.readLatency, m.lat.fuse, m.lat.fuseErrs)
	}
	if src.Registries != nil {
		cs = append(cs, m.lat.registry)
	}
	if src.Snapshotter != nil {
		cs = append(cs, m.lat.mount)
	}
	for _, c := range append(cs, &statsCollector{src: src}) {
		if err := m.reg.Register(c); err != nil {
			return err
		}
	}
	return nil
}

// Gather adds g's metrics (a fuse manager's, say) to Handler's, and a
// gauge name that is 1 when up reports true.
func (m *Metrics) Gather(g prometheus.Gatherer, name, help string, up func() bool) error {
	m.gatherers = append(m.gatherers, g)
	return m.reg.Register(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: name, Help: help}, func() float64 { return b2f(up()) }))
}

// Handler serves the metrics in the Prometheus exposition formats.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.gatherers, promhttp.HandlerOpts{Registry: m.reg, ErrorHandling: promhttp.ContinueOnError})
}

// Sources read the components' counters. A nil source contributes
// nothing.
type Sources struct {
	Registries     func() map[string]fetcher.HostStats // fetcher.Stats
	RegistryErrors func() map[string]int64             // fetcher.ErrorStats
	Cache          func() fetcher.CacheStats           // fetcher.CacheUsage
	Layers         func() []remote.LayerInfo           // the mounted lazy layers
	Snapshotter    func() snapshotter.Stats            // snapshotter.Stats
	Fallbacks      func() []snapshotter.Fallback       // snapshotter.Fallbacks
	Verify         func() remote.VerifyStats           // remote.FS.VerifyStats
	BadLayers      func() []remote.BadLayer            // remote.FS.BadLayers
	PullAuths      func() []string                     // fetcher.PullAuths.Repositories
	Pulls          func() []remote.PullInfo            // remote.FS.Pulls: layers pulled at line rate
}

func desc(name, help string, labels ...string) *prometheus.Desc {
	return prometheus.NewDesc(name, help, labels, nil)
}

var (
	descRegistryRequests = desc("lazysnap_registry_requests_total", "HTTP requests sent to a registry, mirror or blob storage host (token and redirect hops included).", "host")
	descRegistryBytes    = desc("lazysnap_registry_bytes_total", "Response body bytes received from a registry, mirror or blob storage host.", "host")
	descRegistryErrors   = desc("lazysnap_registry_errors_total", "Registry operations that failed after their retries, by kind.", "kind")
	descMirrorFallbacks  = desc("lazysnap_registry_mirror_fallbacks_total", "Operations that failed on a mirror and went on to the next host (the mirror passed over while it rests included).", "host")

	descCacheHits        = desc("lazysnap_cache_hits_total", "Chunk cache lookups served from the cache, by tier (memory, disk).", "tier")
	descCacheMisses      = desc("lazysnap_cache_misses_total", "Chunk cache lookups that went to the registry.")
	descCacheEvictions   = desc("lazysnap_cache_evictions_total", "Disk cache entries evicted for space.")
	descCacheCorrupt     = desc("lazysnap_cache_corrupt_entries_total", "Damaged disk cache entries detected and dropped.")
	descCacheWriteErrors = desc("lazysnap_cache_write_errors_total", "Failed disk cache writes (the read itself succeeded).")
	descCacheBytes       = desc("lazysnap_cache_bytes", "Chunk cache bytes in use, by tier (memory, disk).", "tier")
	descCacheEntries     = desc("lazysnap_cache_entries", "Chunk cache entries, by tier (memory, disk).", "tier")
	descCacheMaxBytes    = desc("lazysnap_cache_max_bytes", "Disk cache size limit in bytes (0: no disk cache).")

	descLayersMounted      = desc("lazysnap_layers_mounted", "Lazy layers mounted now.")
	descLayerChunks        = desc("lazysnap_layer_chunks", "Chunks in a mounted lazy layer.", "layer")
	descLayerChunksPresent = desc("lazysnap_layer_chunks_present", "Chunks of a mounted lazy layer fetched, verified and stored locally.", "layer")
	descLayerFetchedBytes  = desc("lazysnap_layer_fetched_bytes_total", "Compressed bytes a mounted lazy layer received (on demand, prefetch and background).", "layer")
	descLayerRequests      = desc("lazysnap_layer_fetch_requests_total", "Range reads a mounted lazy layer made (cache hits included).", "layer")
	descLayerReads         = desc("lazysnap_layer_reads_total", "FUSE reads served by lazysnap for a mounted lazy layer.", "layer")
	descLayerPassthrough   = desc("lazysnap_layer_passthrough_opens_total", "Opens of complete files handed to the kernel (FUSE passthrough).", "layer")
	descLayerErrors        = desc("lazysnap_layer_errors_total", "Fetch and verification errors of a mounted lazy layer (each failed the reads waiting for it).", "layer")
	descLayerPrefetchDone  = desc("lazysnap_layer_prefetch_done", "1 when a mounted lazy layer's prefetch has finished.", "layer")
	descLayerBgDone        = desc("lazysnap_layer_background_done", "1 when a mounted lazy layer's background fetch has fetched every chunk.", "layer")

	descVerifications = desc("lazysnap_layer_verifications_total", "Checks of complete lazy layers against their blob digests, by result (verified, bad, error: the blob could not be read).", "result")
	descVerifyBytes   = desc("lazysnap_layer_verify_bytes_total", "Blob bytes read to verify complete layers, by source (cache, registry).", "source")
	descBadLayers     = desc("lazysnap_bad_layers", "Layers marked bad by verification (a blob, or one index of it; kept across restarts): new mounts of them fall back.")

	descRemoteMounts    = desc("lazysnap_snapshotter_remote_mounts_total", "Layers prepared as lazy (remote) snapshots.")
	descLineRatePulls   = desc("lazysnap_snapshotter_line_rate_pulls_total", "Layers that were not lazy, pulled by lazysnap at line rate (failures: fallbacks_total{reason=\"pull-failed\"}).")
	descLineRateBytes   = desc("lazysnap_snapshotter_line_rate_pulled_bytes_total", "Compressed bytes of the layers pulled at line rate.")
	descFallbacks       = desc("lazysnap_snapshotter_fallbacks_total", "Layers pulled the ordinary way instead of lazily, by reason.", "reason")
	descRestored        = desc("lazysnap_snapshotter_restored_total", "Lazy layers mounted again (or found healthy) at start.")
	descRestoreFailures = desc("lazysnap_snapshotter_restore_failures_total", "Lazy layers that could not be mounted again at start.")
	descRemounts        = desc("lazysnap_snapshotter_remounts_total", "Lazy layers mounted again after a failed restore or a dead mount.")
	descUnavailable     = desc("lazysnap_snapshotter_unavailable_layers", "Lazy snapshots not mounted now.")
)

// knownReasons are reported (as 0) before any fallback happens, so that the
// series exist from the start.
var knownReasons = []snapshotter.Reason{
	snapshotter.ReasonMissingLabels, snapshotter.ReasonInvalidLabels, snapshotter.ReasonNotLazy,
	snapshotter.ReasonVerification, snapshotter.ReasonTimeout, snapshotter.ReasonMountError,
	snapshotter.ReasonCommitError, snapshotter.ReasonPullFailed,
}

// statsCollector turns the components' counters into metrics at scrape time.
type statsCollector struct{ src Sources }

// Describe describes the metrics of the sources c has, so that one
// registry can hold several statsCollectors with different sources.
func (c *statsCollector) Describe(ch chan<- *prometheus.Desc) {
	var descs []*prometheus.Desc
	if c.src.Registries != nil {
		descs = append(descs, descRegistryRequests, descRegistryBytes, descMirrorFallbacks)
	}
	if c.src.RegistryErrors != nil {
		descs = append(descs, descRegistryErrors)
	}
	if c.src.Cache != nil {
		descs = append(descs, descCacheHits, descCacheMisses, descCacheEvictions, descCacheCorrupt, descCacheWriteErrors,
			descCacheBytes, descCacheEntries, descCacheMaxBytes)
	}
	if c.src.Layers != nil {
		descs = append(descs, descLayersMounted, descLayerChunks, descLayerChunksPresent, descLayerFetchedBytes, descLayerRequests,
			descLayerReads, descLayerPassthrough, descLayerErrors, descLayerPrefetchDone, descLayerBgDone)
	}
	if c.src.Verify != nil {
		descs = append(descs, descVerifications, descVerifyBytes)
	}
	if c.src.BadLayers != nil {
		descs = append(descs, descBadLayers)
	}
	if c.src.Snapshotter != nil {
		descs = append(descs, descRemoteMounts, descLineRatePulls, descLineRateBytes, descFallbacks, descRestored, descRestoreFailures, descRemounts, descUnavailable)
	}
	for _, d := range descs {
		ch <- d
	}
}

func (c *statsCollector) Collect(ch chan<- prometheus.Metric) {
	counter := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, v, labels...)
	}
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	if c.src.Registries != nil {
		for host, s := range c.src.Registries() {
			counter(descRegistryRequests, float64(s.Requests), host)
			counter(descRegistryBytes, float64(s.Bytes), host)
			counter(descMirrorFallbacks, float64(s.MirrorFallbacks), host)
		}
	}
	if c.src.RegistryErrors != nil {
		for kind, n := range c.src.RegistryErrors() {
			counter(descRegistryErrors, float64(n), kind)
		}
	}
	if c.src.Cache != nil {
		s := c.src.Cache()
		counter(descCacheHits, float64(s.MemHits), "memory")
		counter(descCacheHits, float64(s.Hits-s.MemHits), "disk")
		counter(descCacheMisses, float64(s.Misses))
		counter(descCacheEvictions, float64(s.Evictions))
		counter(descCacheCorrupt, float64(s.Corrupt))
		counter(descCacheWriteErrors, float64(s.WriteErrs))
		gauge(descCacheBytes, float64(s.MemBytes), "memory")
		gauge(descCacheBytes, float64(s.Bytes), "disk")
		gauge(descCacheEntries, float64(s.MemEntries), "memory")
		gauge(descCacheEntries, float64(s.Entries), "disk")
		gauge(descCacheMaxBytes, float64(s.MaxBytes))
	}
	if c.src.Layers != nil {
		layers := c.src.Layers()
		gauge(descLayersMounted, float64(len(layers)))
		for dg, s := range layerTotals(layers) {
			l := dg.String()
			gauge(descLayerChunks, float64(s.Chunks), l)
			gauge(descLayerChunksPresent, float64(s.ChunksPresent), l)
			counter(descLayerFetchedBytes, float64(s.FetchedBytes), l)
			counter(descLayerRequests, float64(s.Requests), l)
			counter(descLayerReads, float64(s.FuseReads), l)
			counter(descLayerPassthrough, float64(s.PassthroughOpens), l)
			counter(descLayerErrors, float64(s.Errors), l)
			gauge(descLayerPrefetchDone, b2f(s.PrefetchDone), l)
			gauge(descLayerBgDone, b2f(s.BackgroundDone), l)
		}
	}
	if c.src.Verify != nil {
		v := c.src.Verify()
		counter(descVerifications, float64(v.Verified), "verified")
		counter(descVerifications, float64(v.Bad), "bad")
		counter(descVerifications, float64(v.Errors), "error")
		counter(descVerifyBytes, float64(v.CachedBytes), "cache")
		counter(descVerifyBytes, float64(v.FetchedBytes), "registry")
	}
	if c.src.BadLayers != nil {
		gauge(descBadLayers, float64(len(c.src.BadLayers())))
	}
	if c.src.Snapshotter != nil {
		s := c.src.Snapshotter()
		counter(descRemoteMounts, float64(s.RemoteMounts))
		counter(descLineRatePulls, float64(s.Pulls))
		counter(descLineRateBytes, float64(s.PulledBytes))
		reasons := maps.Clone(s.Fallbacks)
		if reasons == nil {
			reasons = map[snapshotter.Reason]uint64{}
		}
		for _, r := range knownReasons {
			reasons[r] += 0
		}
		for r, n := range reasons {
			counter(descFallbacks, float64(n), string(r))
		}
		counter(descRestored, float64(s.Restored))
		counter(descRestoreFailures, float64(s.RestoreFailures))
		counter(descRemounts, float64(s.Remounts))
		gauge(descUnavailable, float64(s.Unavailable))
	}
}

// layerTotals merges the layers by digest: a blob mounted at several
// mountpoints (the same layer under different parents) is one series, its
// counters summed and its done flags true only when true for every mount.
func layerTotals(layers []remote.LayerInfo) map[digest.Digest]fetch.Stats {
	out := make(map[digest.Digest]fetch.Stats, len(layers))
	for _, l := range layers {
		t, ok := out[l.Digest]
		if !ok {
			out[l.Digest] = l.Stats
			continue
		}
		s := l.Stats
		t.Chunks += s.Chunks
		t.ChunksPresent += s.ChunksPresent
		t.FetchedBytes += s.FetchedBytes
		t.Requests += s.Requests
		t.FuseReads += s.FuseReads
		t.PassthroughOpens += s.PassthroughOpens
		t.Errors += s.Errors
		t.PrefetchDone = t.PrefetchDone && s.PrefetchDone
		t.BackgroundDone = t.BackgroundDone && s.BackgroundDone
		out[l.Digest] = t
	}
	return out
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
