package ops

import (
	"net/http"
	"strconv"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sys/unix"
)

// The latency histograms and the FUSE error counter: observed as things
// happen (the components call the functions below, given to them as
// hooks), unlike the counters statsCollector reads at scrape time. Each is
// cheap (a few atomic adds) and safe for concurrent use.

// fuseBuckets span a FUSE request answered from memory (tens of
// microseconds) to a read that waits for a slow registry (tens of seconds).
var fuseBuckets = []float64{.00005, .0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30}

// latency holds the histograms Metrics registers with the sources that
// feed them.
type latency struct {
	mount    *prometheus.HistogramVec // result
	registry *prometheus.HistogramVec // host, status
	fuse     *prometheus.HistogramVec // op
	fuseErrs *prometheus.CounterVec   // op, errno
}

func newLatency() latency {
	return latency{
		mount: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "lazysnap_mount_duration_seconds",
			Help:    "Time a layer's mount took when containerd prepared it, by result (lazy: mounted; fallback: the layer is pulled the ordinary way).",
			Buckets: readLatencyBuckets,
		}, []string{"result"}),
		registry: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "lazysnap_registry_request_duration_seconds",
			Help:    "Time from sending an HTTP request to a registry, mirror or blob storage host to its response headers, by host and status code (error: no response).",
			Buckets: readLatencyBuckets,
		}, []string{"host", "status"}),
		fuse: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "lazysnap_fuse_operation_duration_seconds",
			Help:    "Time lazysnap took to answer a FUSE request of a lazy layer, by operation (lookup, getattr, open, read, readdirplus, getxattr, ...).",
			Buckets: fuseBuckets,
		}, []string{"op"}),
		fuseErrs: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "lazysnap_fuse_operation_errors_total",
			Help: "FUSE requests of lazy layers answered with an error, by operation and errno (EIO: data that could not be fetched or verified; ENODATA, ENOSYS and ERANGE are ordinary answers).",
		}, []string{"op", "errno"}),
	}
}

// ObserveMount is the snapshotter's snapshotter.WithOnMount.
func (m *Metrics) ObserveMount(took time.Duration, lazy bool) {
	result := "fallback"
	if lazy {
		result = "lazy"
	}
	m.lat.mount.WithLabelValues(result).Observe(took.Seconds())
}

// ObserveFUSE is the filesystem's fetch.Options.OnOp.
func (m *Metrics) ObserveFUSE(op string, took time.Duration, errno syscall.Errno) {
	m.lat.fuse.WithLabelValues(op).Observe(took.Seconds())
	if errno != 0 {
		name := unix.ErrnoName(errno)
		if name == "" {
			name = strconv.Itoa(int(errno))
		}
		m.lat.fuseErrs.WithLabelValues(op, name).Inc()
	}
}

// RegistryTransport is the fetcher's fetcher.Config.WrapTransport: it times
// each request rt sends, to its response headers, by host and status.
func (m *Metrics) RegistryTransport(rt http.RoundTripper) http.RoundTripper {
	return timedTransport{base: rt, h: m.lat.registry}
}

type timedTransport struct {
	base http.RoundTripper
	h    *prometheus.HistogramVec
}

func (t timedTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	start := time.Now()
	resp, err := t.base.RoundTrip(req)
	status := "error"
	if err == nil {
		status = strconv.Itoa(resp.StatusCode)
	}
	t.h.WithLabelValues(req.URL.Host, status).Observe(time.Since(start).Seconds())
	return resp, err
}
