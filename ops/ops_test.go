package ops

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/lazysnap/lazysnap/fetcher"
	"github.com/lazysnap/lazysnap/fs/fetch"
	"github.com/lazysnap/lazysnap/remote"
	"github.com/lazysnap/lazysnap/snapshotter"
	"github.com/opencontainers/go-digest"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

func hexDigest(c byte) string { return "sha256:" + strings.Repeat(string(c), 64) }

func TestFillLayer(t *testing.T) {
	for _, tc := range []struct {
		name                   string
		st                     fetch.Stats
		noPrefetch, background bool
		state                  string
		pct                    float64
	}{
		{"prefetching", fetch.Stats{Chunks: 10, ChunksPresent: 1}, false, true, StatePrefetching, 10},
		{"background", fetch.Stats{Chunks: 10, ChunksPresent: 5, PrefetchDone: true}, false, true, StateBackground, 50},
		{"on demand only", fetch.Stats{Chunks: 3, ChunksPresent: 1, PrefetchDone: true}, false, false, StateLazy, 33.3},
		{"prefetch off", fetch.Stats{Chunks: 10, ChunksPresent: 0}, true, false, StateLazy, 0},
		{"complete", fetch.Stats{Chunks: 4, ChunksPresent: 4, PrefetchDone: true, BackgroundDone: true}, false, true, StateComplete, 100},
		{"no chunks at all", fetch.Stats{PrefetchDone: true}, false, true, StateComplete, 100},
		{"one chunk short is not 100%", fetch.Stats{Chunks: 10000, ChunksPresent: 9999, PrefetchDone: true}, false, false, StateLazy, 99.9},
		{"one chunk is not 0%", fetch.Stats{Chunks: 10000, ChunksPresent: 1, PrefetchDone: true}, false, false, StateLazy, 0.1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var ls Layer
			fillLayer(&ls, remote.LayerInfo{Stats: tc.st}, tc.noPrefetch, tc.background)
			if ls.State != tc.state || ls.FetchedPercent != tc.pct {
				t.Fatalf("state %q, %v%%; want %q, %v%%", ls.State, ls.FetchedPercent, tc.state, tc.pct)
			}
		})
	}
}

// TestFillLayerProfile: the layer's profile state reaches the report (and
// its JSON), as README's "ignored with the reason in lazysnap status" says.
func TestFillLayerProfile(t *testing.T) {
	var ls Layer
	fillLayer(&ls, remote.LayerInfo{ProfileState: "ignored: stale TOC (the profile names sha256:x)"}, false, false)
	b, err := json.Marshal(ls)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(b), `"profile":"ignored: stale TOC`) {
		t.Fatalf("status JSON of a layer lacks its profile state: %s", b)
	}
}

func TestGroupImages(t *testing.T) {
	layers := []Layer{
		{Digest: "d3", ref: "b", seq: 3},
		{Digest: "d1", ref: "a", seq: 1},
		{Digest: "d4", ref: "a", seq: 4},
		{Digest: "d2", ref: "b", seq: 2},
	}
	got := groupImages(layers)
	var s []string
	for _, img := range got {
		var ds []string
		for _, l := range img.Layers {
			ds = append(ds, l.Digest)
		}
		s = append(s, img.Ref+":"+strings.Join(ds, ","))
	}
	if strings.Join(s, " ") != "a:d1,d4 b:d2,d3" {
		t.Fatalf("grouped as %v", s)
	}
}

// TestStatsCollector checks the metrics read from fake component counters:
// values, labels, the merge of a layer mounted twice, and Prometheus naming
// conventions.
func TestStatsCollector(t *testing.T) {
	dA, dB := digest.Digest(hexDigest('a')), digest.Digest(hexDigest('b'))
	c := &statsCollector{src: Sources{
		Registries: func() map[string]fetcher.HostStats {
			return map[string]fetcher.HostStats{"reg.example": {Requests: 7, Bytes: 1000}}
		},
		RegistryErrors: func() map[string]int64 { return map[string]int64{"timeout": 3, "other": 0} },
		Cache: func() fetcher.CacheStats {
			return fetcher.CacheStats{Bytes: 500, Entries: 5, MaxBytes: 1 << 20, MemBytes: 50, MemEntries: 1,
				Hits: 10, MemHits: 4, Misses: 6, Evictions: 2, Corrupt: 1, WriteErrs: 1}
		},
		Layers: func() []remote.LayerInfo {
			return []remote.LayerInfo{
				{Mountpoint: "/m1", Digest: dA, Stats: fetch.Stats{Chunks: 10, ChunksPresent: 4, FetchedBytes: 400, Requests: 2, FuseReads: 9, Errors: 1, PrefetchDone: true}},
				{Mountpoint: "/m2", Digest: dA, Stats: fetch.Stats{Chunks: 10, ChunksPresent: 10, FetchedBytes: 1000, Requests: 3, PassthroughOpens: 2, PrefetchDone: true, BackgroundDone: true}},
				{Mountpoint: "/m3", Digest: dB, Stats: fetch.Stats{Chunks: 1, ChunksPresent: 1, PrefetchDone: true, BackgroundDone: true}},
			}
		},
		Snapshotter: func() snapshotter.Stats {
			return snapshotter.Stats{RemoteMounts: 3, Fallbacks: map[snapshotter.Reason]uint64{snapshotter.ReasonNotLazy: 2, "custom": 1}, Restored: 1, Unavailable: 1}
		},
		Verify: func() remote.VerifyStats {
			return remote.VerifyStats{Verified: 4, Bad: 1, Errors: 2, CachedBytes: 900, FetchedBytes: 100}
		},
		BadLayers: func() []remote.BadLayer { return []remote.BadLayer{{Digest: dB, Reason: "digest differs"}} },
	}}
	want := fmt.Sprintf(`
# HELP lazysnap_registry_requests_total HTTP requests sent to a registry, mirror or blob storage host (token and redirect hops included).
# TYPE lazysnap_registry_requests_total counter
lazysnap_registry_requests_total{host="reg.example"} 7
# HELP lazysnap_registry_bytes_total Response body bytes received from a registry, mirror or blob storage host.
# TYPE lazysnap_registry_bytes_total counter
lazysnap_registry_bytes_total{host="reg.example"} 1000
# HELP lazysnap_registry_errors_total Registry operations that failed after their retries, by kind.
# TYPE lazysnap_registry_errors_total counter
lazysnap_registry_errors_total{kind="other"} 0
lazysnap_registry_errors_total{kind="timeout"} 3
# HELP lazysnap_cache_hits_total Chunk cache lookups served from the cache, by tier (memory, disk).
# TYPE lazysnap_cache_hits_total counter
lazysnap_cache_hits_total{tier="disk"} 6
lazysnap_cache_hits_total{tier="memory"} 4
# HELP lazysnap_cache_bytes Chunk cache bytes in use, by tier (memory, disk).
# TYPE lazysnap_cache_bytes gauge
lazysnap_cache_bytes{tier="disk"} 500
lazysnap_cache_bytes{tier="memory"} 50
# HELP lazysnap_layers_mounted Lazy layers mounted now.
# TYPE lazysnap_layers_mounted gauge
lazysnap_layers_mounted 3
# HELP lazysnap_layer_chunks Chunks in a mounted lazy layer.
# TYPE lazysnap_layer_chunks gauge
lazysnap_layer_chunks{layer="%[1]s"} 20
lazysnap_layer_chunks{layer="%[2]s"} 1
# HELP lazysnap_layer_chunks_present Chunks of a mounted lazy layer fetched, verified and stored locally.
# TYPE lazysnap_layer_chunks_present gauge
lazysnap_layer_chunks_present{layer="%[1]s"} 14
lazysnap_layer_chunks_present{layer="%[2]s"} 1
# HELP lazysnap_layer_fetched_bytes_total Compressed bytes a mounted lazy layer received (on demand, prefetch and background).
# TYPE lazysnap_layer_fetched_bytes_total counter
lazysnap_layer_fetched_bytes_total{layer="%[1]s"} 1400
lazysnap_layer_fetched_bytes_total{layer="%[2]s"} 0
# HELP lazysnap_layer_errors_total Fetch and verification errors of a mounted lazy layer (each failed the reads waiting for it).
# TYPE lazysnap_layer_errors_total counter
lazysnap_layer_errors_total{layer="%[1]s"} 1
lazysnap_layer_errors_total{layer="%[2]s"} 0
# HELP lazysnap_layer_background_done 1 when a mounted lazy layer's background fetch has fetched every chunk.
# TYPE lazysnap_layer_background_done gauge
lazysnap_layer_background_done{layer="%[1]s"} 0
lazysnap_layer_background_done{layer="%[2]s"} 1
# HELP lazysnap_snapshotter_fallbacks_total Layers pulled the ordinary way instead of lazily, by reason.
# TYPE lazysnap_snapshotter_fallbacks_total counter
lazysnap_snapshotter_fallbacks_total{reason="commit-error"} 0
lazysnap_snapshotter_fallbacks_total{reason="custom"} 1
lazysnap_snapshotter_fallbacks_total{reason="invalid-labels"} 0
lazysnap_snapshotter_fallbacks_total{reason="missing-labels"} 0
lazysnap_snapshotter_fallbacks_total{reason="mount-error"} 0
lazysnap_snapshotter_fallbacks_total{reason="not-lazy"} 2
lazysnap_snapshotter_fallbacks_total{reason="pull-failed"} 0
lazysnap_snapshotter_fallbacks_total{reason="timeout"} 0
lazysnap_snapshotter_fallbacks_total{reason="verification"} 0
# HELP lazysnap_snapshotter_unavailable_layers Lazy snapshots not mounted now.
# TYPE lazysnap_snapshotter_unavailable_layers gauge
lazysnap_snapshotter_unavailable_layers 1
# HELP lazysnap_layer_verifications_total Checks of complete lazy layers against their blob digests, by result (verified, bad, error: the blob could not be read).
# TYPE lazysnap_layer_verifications_total counter
lazysnap_layer_verifications_total{result="bad"} 1
lazysnap_layer_verifications_total{result="error"} 2
lazysnap_layer_verifications_total{result="verified"} 4
# HELP lazysnap_layer_verify_bytes_total Blob bytes read to verify complete layers, by source (cache, registry).
# TYPE lazysnap_layer_verify_bytes_total counter
lazysnap_layer_verify_bytes_total{source="cache"} 900
lazysnap_layer_verify_bytes_total{source="registry"} 100
# HELP lazysnap_bad_layers Layers marked bad by verification (a blob, or one index of it; kept across restarts): new mounts of them fall back.
# TYPE lazysnap_bad_layers gauge
lazysnap_bad_layers 1
`, dA, dB)
	names := []string{"lazysnap_registry_requests_total", "lazysnap_registry_bytes_total", "lazysnap_registry_errors_total",
		"lazysnap_cache_hits_total", "lazysnap_cache_bytes", "lazysnap_layers_mounted", "lazysnap_layer_chunks",
		"lazysnap_layer_chunks_present", "lazysnap_layer_fetched_bytes_total", "lazysnap_layer_errors_total",
		"lazysnap_layer_background_done", "lazysnap_snapshotter_fallbacks_total", "lazysnap_snapshotter_unavailable_layers",
		"lazysnap_layer_verifications_total", "lazysnap_layer_verify_bytes_total", "lazysnap_bad_layers"}
	if err := testutil.CollectAndCompare(c, strings.NewReader(want), names...); err != nil {
		t.Fatal(err)
	}
	problems, err := testutil.CollectAndLint(c)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("lint: %s: %s", p.Metric, p.Text)
	}
	// the whole registry: described collectors, no duplicates, lint-clean
	m := NewMetrics("", "dev")
	if err := m.Register(c.src); err != nil {
		t.Fatal(err)
	}
	m.ObserveRead(3 * time.Millisecond)
	m.ObserveRead(2 * time.Second)
	if n := testutil.CollectAndCount(m.readLatency); n != 1 {
		t.Fatalf("%d histograms", n)
	}
	problems, err = testutil.GatherAndLint(m.reg)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		if strings.HasPrefix(p.Metric, "lazysnap_") {
			t.Errorf("lint: %s: %s", p.Metric, p.Text)
		}
	}
	if err := testutil.GatherAndCompare(m.reg, strings.NewReader(`
# HELP lazysnap_build_info Always 1; the version label is lazysnap's version.
# TYPE lazysnap_build_info gauge
lazysnap_build_info{version="dev"} 1
`), "lazysnap_build_info"); err != nil {
		t.Fatal(err)
	}
	var _ prometheus.Collector = c
}

// TestStatusFallbacks: the layers the snapshotter lists as fallen back
// (whatever step refused them) appear in the status after the mounted
// layers of their image, or as an image of their own.
func TestStatusFallbacks(t *testing.T) {
	tfs := remote.New(nil, remote.Options{Root: t.TempDir()})
	fbs := []snapshotter.Fallback{
		{Ref: "reg.example/app:1", Digest: hexDigest('a'), Reason: snapshotter.ReasonMountError, Err: "registry down"},
		{Ref: "reg.example/other:1", Digest: "md5:d41d8cd98f00b204e9800998ecf8427e", Reason: snapshotter.ReasonInvalidLabels, Err: "bad digest"},
	}
	mls := []remote.LayerInfo{{Mountpoint: "/mnt/b", Digest: digest.Digest(hexDigest('b')), Ref: "reg.example/app:1", Stats: fetch.Stats{Chunks: 1, ChunksPresent: 1}}}
	rep := (&Server{FS: tfs, Src: Sources{
		Layers:    func() []remote.LayerInfo { return mls },
		Fallbacks: func() []snapshotter.Fallback { return fbs },
	}}).Report(context.Background())
	if len(rep.Images) != 2 || rep.Images[0].Ref != "reg.example/app:1" || len(rep.Images[0].Layers) != 2 ||
		rep.Images[0].Layers[0].State != StateComplete || rep.Images[0].Layers[1].State != StateFallback ||
		rep.Images[0].Layers[1].FallbackReason != "mount-error" || rep.Images[0].Layers[1].Error != "registry down" ||
		rep.Images[1].Ref != "reg.example/other:1" || rep.Images[1].Layers[0].FallbackReason != "invalid-labels" ||
		rep.Images[1].Layers[0].Digest != fbs[1].Digest {
		t.Fatalf("report: %+v", rep.Images)
	}
}

// TestStatusVerification: a layer's verification state, the bad layers
// with their reasons, and the verification counters reach the report and
// its JSON.
func TestStatusVerification(t *testing.T) {
	tfs := remote.New(nil, remote.Options{Root: t.TempDir()})
	bad := digest.Digest(hexDigest('c'))
	rep := (&Server{FS: tfs, Src: Sources{
		Layers: func() []remote.LayerInfo {
			return []remote.LayerInfo{{Mountpoint: "/mnt/c", Digest: bad, Ref: "reg.example/app:1", Verification: "bad: digest differs"}}
		},
		Verify:    func() remote.VerifyStats { return remote.VerifyStats{Bad: 1, FetchedBytes: 10} },
		BadLayers: func() []remote.BadLayer { return []remote.BadLayer{{Digest: bad, Reason: "digest differs"}} },
	}}).Report(context.Background())
	b, err := json.Marshal(rep)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{`"verification":"bad: digest differs"`, `"bad_layers":[{"digest":"` + bad.String() + `","reason":"digest differs"`, `"verification":{"verified":0,"bad":1`} {
		if !strings.Contains(string(b), want) {
			t.Errorf("status JSON lacks %s:\n%s", want, b)
		}
	}
}
