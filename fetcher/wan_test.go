package fetcher

import (
	"bytes"
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/lazysnap/lazysnap/internal/testenv/registry"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

const (
	wanLayerSize = 100 << 20
	wanRanges    = 64
	wanRangeLen  = 64 << 10
	wanRTT       = 20 * time.Millisecond
)

// wanEnv is a registry holding a 100 MiB layer behind a WAN proxy with
// 20 ms added round trip.
type wanEnv struct {
	wan   *registry.WANProxy
	hosts string // hosts dir: the proxy as a plain-HTTP server
	ref   string
	desc  ocispec.Descriptor
	layer []byte
}

func startWANEnv(tb testing.TB) *wanEnv {
	tb.Helper()
	r := registry.Start(tb, registry.Options{})
	layer := randBytes(60, wanLayerSize)
	d, err := r.Pusher().PushBlob(context.Background(), "wan/layer", layer)
	if err != nil {
		tb.Fatalf("push: %v", err)
	}
	d.MediaType = ocispec.MediaTypeImageLayerGzip
	wan := registry.StartWANProxy(tb, r.URL(), registry.WANOptions{RTT: wanRTT})
	// An explicit http:// server: without it containerd probes localhost
	// with TLS first, which would add a connection to the counts.
	hosts := tb.TempDir()
	if _, err := registry.WriteHostsConfig(hosts, wan.Host, registry.Endpoint{URL: wan.URL}); err != nil {
		tb.Fatal(err)
	}
	return &wanEnv{wan: wan, hosts: hosts, ref: wan.Host + "/wan/layer:v1", desc: d, layer: layer}
}

// clustered returns n ranges of size each in groups of 8 separated by a
// 16 KiB gap, the groups spread over total.
func clustered(total int64, n int, size int64) []Range {
	rs := make([]Range, 0, n)
	groups := n / 8
	step := (total - 8*(size+16<<10)) / int64(groups)
	for g := range groups {
		base := int64(g) * step
		for i := range 8 {
			rs = append(rs, Range{Off: base + int64(i)*(size+16<<10), Len: size})
		}
	}
	return rs
}

type wanScenario struct {
	name       string
	ranges     func(total int64) []Range
	cfg        Config
	sequential bool // one ReadRange after another (a naive lazy reader)
}

func wanScenarios() []wanScenario {
	sc := func(total int64) []Range { return scattered(total, wanRanges, wanRangeLen) }
	cl := func(total int64) []Range { return clustered(total, wanRanges, wanRangeLen) }
	return []wanScenario{
		{name: "scattered/per-range-sequential", ranges: sc, cfg: Config{MaxRangesPerRequest: 1, CoalesceGap: -1}, sequential: true},
		{name: "scattered/per-range-8-parallel", ranges: sc, cfg: Config{MaxRangesPerRequest: 1, CoalesceGap: -1}},
		{name: "scattered/multi-range-32", ranges: sc, cfg: Config{}},
		{name: "scattered/multi-range-64", ranges: sc, cfg: Config{MaxRangesPerRequest: 64}},
		{name: "clustered/per-range-sequential", ranges: cl, cfg: Config{MaxRangesPerRequest: 1, CoalesceGap: -1}, sequential: true},
		{name: "clustered/per-range-8-parallel", ranges: cl, cfg: Config{MaxRangesPerRequest: 1, CoalesceGap: -1}},
		{name: "clustered/coalesced-only", ranges: cl, cfg: Config{MaxRangesPerRequest: 1}},
		{name: "clustered/coalesced+multi-range", ranges: cl, cfg: Config{}},
	}
}

// run reads the scenario's ranges with a cache-less fetcher and returns the
// elapsed time.
func (e *wanEnv) run(tb testing.TB, s wanScenario, verify bool) time.Duration {
	cfg := s.cfg
	cfg.MemCacheMaxBytes = -1
	cfg.MaxConnsPerHost = 8
	cfg.HostsDir = e.hosts
	f, err := New(fastConfig(cfg))
	if err != nil {
		tb.Fatal(err)
	}
	defer f.Close()
	b, err := f.Blob(context.Background(), e.ref, e.desc)
	if err != nil {
		tb.Fatal(err)
	}
	rs := s.ranges(e.desc.Size)
	ctx := context.Background()
	start := time.Now()
	out := make([][]byte, len(rs))
	if s.sequential {
		for i, r := range rs {
			if out[i], err = b.ReadRange(ctx, r.Off, r.Len); err != nil {
				tb.Fatal(err)
			}
		}
	} else if out, err = b.ReadRanges(ctx, rs); err != nil {
		tb.Fatal(err)
	}
	el := time.Since(start)
	if verify {
		for i, r := range rs {
			if !bytes.Equal(out[i], e.layer[r.Off:r.End()]) {
				tb.Fatalf("%s: range %v: wrong bytes", s.name, r)
			}
		}
	}
	return el
}

// TestWANReport prints requests, bytes and time for reading 64 ranges of
// 64 KiB of a 100 MiB layer through a 20 ms round trip, with and without
// multi-range requests and coalescing. Run:
//
//	go test ./fetcher -run TestWANReport -v
func TestWANReport(t *testing.T) {
	if testing.Short() {
		t.Skip("pushes a 100 MiB layer")
	}
	e := startWANEnv(t)
	payload := int64(wanRanges * wanRangeLen)
	var sb strings.Builder
	fmt.Fprintf(&sb, "64 x 64 KiB ranges (%d KiB payload) of a %d MiB layer, %v added RTT, cold cache:\n", payload>>10, wanLayerSize>>20, wanRTT)
	fmt.Fprintf(&sb, "%-34s %8s %6s %12s %10s %9s\n", "scenario", "requests", "conns", "wire bytes", "overhead", "time")
	results := map[string]registry.WANStats{}
	for _, s := range wanScenarios() {
		e.wan.Reset()
		el := e.run(t, s, true)
		st := e.wan.Stats()
		results[s.name] = st
		fmt.Fprintf(&sb, "%-34s %8d %6d %12d %9.1f%% %9v\n", s.name, st.Requests, st.Connections, st.ResponseBytes,
			100*float64(st.ResponseBytes-payload)/float64(payload), el.Round(time.Millisecond))
	}
	t.Log("\n" + sb.String())
	// The figures must show what the design promises.
	checks := []struct {
		name string
		max  int64
	}{
		{"scattered/multi-range-32", 2},
		{"scattered/multi-range-64", 1},
		{"clustered/coalesced-only", 8},
		{"clustered/coalesced+multi-range", 1},
	}
	for _, c := range checks {
		if got := results[c.name].Requests; got > c.max {
			t.Errorf("%s: %d requests, want <= %d", c.name, got, c.max)
		}
	}
	if got := results["scattered/per-range-sequential"].Requests; got != wanRanges {
		t.Errorf("per-range: %d requests, want %d", got, wanRanges)
	}
}

// BenchmarkWANScatteredReads: the WAN report scenarios as benchmarks, with
// requests/op and wire-bytes/op metrics.
func BenchmarkWANScatteredReads(b *testing.B) {
	e := startWANEnv(b)
	for _, s := range wanScenarios() {
		b.Run(s.name, func(b *testing.B) {
			b.SetBytes(wanRanges * wanRangeLen)
			b.ReportAllocs()
			e.wan.Reset()
			for b.Loop() {
				e.run(b, s, false)
			}
			st := e.wan.Stats()
			b.ReportMetric(float64(st.Requests)/float64(b.N), "requests/op")
			b.ReportMetric(float64(st.ResponseBytes)/float64(b.N), "wire-bytes/op")
		})
	}
}

// BenchmarkCacheHit measures cached reads of a 64 KiB chunk.
func BenchmarkCacheHit(b *testing.B) {
	data := randBytes(61, 1<<20)
	tests := []struct {
		name string
		mem  int64
	}{
		{name: "disk", mem: -1},
		{name: "memory", mem: 64 << 20},
	}
	for _, tc := range tests {
		b.Run(tc.name, func(b *testing.B) {
			srv := newFakeRegistry(b, data, nil)
			f := newTestFetcher(b, Config{CacheDir: b.TempDir(), MemCacheMaxBytes: tc.mem})
			bl := mustBlob(b, f, srv.ref(), srv.desc())
			ctx := context.Background()
			if _, err := bl.ReadRange(ctx, 4096, 64<<10); err != nil {
				b.Fatal(err)
			}
			b.SetBytes(64 << 10)
			b.ReportAllocs()
			for b.Loop() {
				if _, err := bl.ReadRange(ctx, 4096, 64<<10); err != nil {
					b.Fatal(err)
				}
			}
			if srv.blobRequests() != 1 {
				b.Fatalf("cache missed: %d requests", srv.blobRequests())
			}
		})
	}
}
