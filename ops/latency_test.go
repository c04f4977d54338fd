package ops

import (
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/lazysnap/lazysnap/fetcher"
	"github.com/lazysnap/lazysnap/remote"
	"github.com/lazysnap/lazysnap/snapshotter"
	dto "github.com/prometheus/client_model/go"
)

// family gathers m and returns the family called name (nil if absent).
func family(t *testing.T, m *Metrics, name string) *dto.MetricFamily {
	t.Helper()
	fams, err := m.gatherers.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range fams {
		if f.GetName() == name {
			return f
		}
	}
	return nil
}

// labelsOf renders a series' labels as k=v,k=v.
func labelsOf(m *dto.Metric) string {
	var out []string
	for _, l := range m.GetLabel() {
		out = append(out, l.GetName()+"="+l.GetValue())
	}
	return strings.Join(out, ",")
}

// TestLatencyMetrics: the hooks the components are given feed the
// histograms by their labels (registry requests by host and status, an
// unanswered one as "error"; FUSE operations by op, with errors by op and
// errno name; mounts by result), and each is exported only by a registry
// whose sources have that component.
func TestLatencyMetrics(t *testing.T) {
	m := NewMetrics("", "test")
	if err := m.Register(Sources{
		Registries: func() map[string]fetcher.HostStats {
			return map[string]fetcher.HostStats{"mirror:5000": {Requests: 3, MirrorFallbacks: 2}}
		},
		Layers:      func() []remote.LayerInfo { return nil },
		Snapshotter: func() snapshotter.Stats { return snapshotter.Stats{} },
	}); err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/missing" {
			http.NotFound(w, r)
			return
		}
		w.WriteHeader(http.StatusPartialContent)
	}))
	defer srv.Close()
	client := &http.Client{Transport: m.RegistryTransport(http.DefaultTransport)}
	for _, p := range []string{"/blob", "/blob", "/missing"} {
		resp, err := client.Get(srv.URL + p)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
	}
	dead := &http.Client{Transport: m.RegistryTransport(roundTripFunc(func(*http.Request) (*http.Response, error) { return nil, errors.New("refused") }))}
	if _, err := dead.Get("http://down.example:5000/v2/"); err == nil {
		t.Fatal("a failing transport succeeded")
	}
	m.ObserveFUSE("read", time.Millisecond, 0)
	m.ObserveFUSE("read", 2*time.Millisecond, syscall.EIO)
	m.ObserveFUSE("getxattr", time.Microsecond, syscall.ENODATA)
	m.ObserveMount(80*time.Millisecond, true)
	m.ObserveMount(time.Second, false)

	host := strings.TrimPrefix(srv.URL, "http://")
	cases := []struct {
		name   string
		family string
		want   map[string]uint64 // labels → sample count (histograms) or value (counters)
	}{
		{"registry", "lazysnap_registry_request_duration_seconds", map[string]uint64{
			"host=" + host + ",status=206": 2, "host=" + host + ",status=404": 1, "host=down.example:5000,status=error": 1}},
		{"fuse", "lazysnap_fuse_operation_duration_seconds", map[string]uint64{"op=read": 2, "op=getxattr": 1}},
		{"fuse errors", "lazysnap_fuse_operation_errors_total", map[string]uint64{"errno=EIO,op=read": 1, "errno=ENODATA,op=getxattr": 1}},
		{"mounts", "lazysnap_mount_duration_seconds", map[string]uint64{"result=lazy": 1, "result=fallback": 1}},
		{"mirror fallbacks", "lazysnap_registry_mirror_fallbacks_total", map[string]uint64{"host=mirror:5000": 2}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			f := family(t, m, c.family)
			if f == nil {
				t.Fatalf("%s not exported", c.family)
			}
			got := map[string]uint64{}
			for _, s := range f.GetMetric() {
				if h := s.GetHistogram(); h != nil {
					got[labelsOf(s)] = h.GetSampleCount()
				} else {
					got[labelsOf(s)] = uint64(s.GetCounter().GetValue())
				}
			}
			if len(got) != len(c.want) {
				t.Fatalf("series %v, want %v", got, c.want)
			}
			for k, v := range c.want {
				if got[k] != v {
					t.Fatalf("series %v, want %v", got, c.want)
				}
			}
		})
	}

	// a registry without the layers, registries or snapshotter (serve's,
	// when a fuse manager serves the layers) exports none of their series
	bare := NewMetrics("", "test")
	if err := bare.Register(Sources{Fallbacks: func() []snapshotter.Fallback { return nil }}); err != nil {
		t.Fatal(err)
	}
	bare.ObserveFUSE("read", time.Millisecond, syscall.EIO)
	for _, c := range cases {
		if family(t, bare, c.family) != nil {
			t.Errorf("%s exported without its source", c.family)
		}
	}
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }
