package benchmarks

// Fast tests of the harness's own parts (they run in every go test).

import (
	"encoding/xml"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/lazysnap/lazysnap/internal/testenv/registry"
	"github.com/pelletier/go-toml/v2"
)

// TestWANLogSummary: the report's reading of the WAN's request log.
func TestWANLogSummary(t *testing.T) {
	entries := []registry.WANRequest{
		{Method: "GET", Path: "/v2/", InFlight: 1},
		{Method: "GET", Path: "/v2/app/manifests/v1", Bytes: 1000, InFlight: 1},
		{Method: "HEAD", Path: "/v2/app/blobs/sha256:aa", InFlight: 1},
		{Method: "GET", Path: "/v2/app/blobs/sha256:aa", Range: "bytes=0-9", Bytes: 10, InFlight: 1},
		{Method: "GET", Path: "/v2/app/blobs/sha256:bb", Range: "bytes=0-9", Bytes: 10, InFlight: 2},
		{Method: "GET", Path: "/v2/app/blobs/sha256:cc", Bytes: 2e6, InFlight: 3},
		{Method: "GET", Path: "/v2/_catalog", InFlight: 1},
	}
	if got, want := summarize(entries), "get manifest 1 (0.00 MB), get other 1, head blob 1, ping 1, range read 2 (0.00 MB), whole blob 1 (2.00 MB)"; got != want {
		t.Errorf("summarize = %q, want %q", got, want)
	}
	if got := serialRequests(entries); got != 5 {
		t.Errorf("serialRequests = %d, want 5", got)
	}
}

// TestColdStartReport renders a report from made-up runs: the markdown has
// the default-configuration table before the secondary one, and the goals;
// the SVG is well-formed XML.
func TestColdStartReport(t *testing.T) {
	cfg := benchConfig{rtt: 20 * time.Millisecond, bandwidth: 12_500_000, runs: 3, bigBytes: 512 << 20, smallFiles: 100000}
	cfg.workloads = allWorkloads()[:4]
	cfg.modes = allModes()
	var runs []runResult
	for run := 1; run <= 3; run++ {
		for i, w := range cfg.workloads {
			for j, m := range cfg.modes {
				total := float64(i+1) * float64(8-j) * (1 + 0.01*float64(run))
				runs = append(runs, runResult{Workload: w.name, Mode: m.name, Run: run, Pull: total / 3, FirstOutput: total / 2,
					Total: total, Bytes: int64(total * 1e6), Requests: int64(10 * (j + 1)), PeakRSS: 50 << 20, PeakOf: "lazysnap"})
			}
		}
	}
	images := &imageSet{needs: map[string]needs{}, files: map[string][]string{}}
	for _, w := range cfg.workloads {
		images.needs[w.name+":esgz"] = needs{needed: 3e6, withPrefetch: 3e6}
		images.needs[w.name+":prio-"+w.name] = needs{needed: 3e6, withPrefetch: 4e6}
	}
	r := newReport(cfg, images, runs)
	if want := len(cfg.workloads) * len(cfg.modes); len(r.medians) != want {
		t.Fatalf("%d medians, want %d", len(r.medians), want)
	}
	if m := r.find("hash", "overlayfs"); m == nil || m.Total != 24*1.02 {
		t.Fatalf("median of hash/overlayfs: %+v", m)
	}
	dir := t.TempDir()
	if err := r.write(dir); err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(filepath.Join(dir, "coldstart.md"))
	md := string(b)
	for _, want := range []string{"| hello | lazy |", "| hello | peer-lazy |", "| hello | lazy-nobg |",
		"hello total ≤ 1.2 s (unprofiled eStargz)", "imports total ≤ 2.0 s", "hello total ≤ 0.9 s (recorded profile)",
		"hello total ≤ 1.2 ×", "hash total ≤ 1.05 × 512 MiB", "≤ 1.5 × needed", "≤ 1.05 × with background fetch off (prioritized-nobg)",
		"bytes fetched ≤ needed (walk)", "hello total ≤ 1.15 × link time of the", "hash total ≤ 1.10 × link time of the", "![total time"} {
		if !strings.Contains(md, want) {
			t.Errorf("markdown lacks %q:\n%s", want, md)
		}
	}
	if i, j := strings.Index(md, "| hello | peer |"), strings.Index(md, "| hello | lazy-nobg |"); i < 0 || j < i {
		t.Errorf("the default-configuration rows do not come first:\n%s", md)
	}
	// the peer is not held to lazysnap's goals, nor the line-rate pull
	// to a lazy start's
	for _, g := range r.goals {
		if g.Mode == "linerate" && !strings.Contains(g.Name, "link time of the") {
			t.Errorf("goal %q checked on mode linerate", g.Name)
		}
		if strings.HasPrefix(g.Mode, "peer") || g.Mode == "overlayfs" {
			t.Errorf("goal %q checked on mode %s", g.Name, g.Mode)
		}
	}
	svg, _ := os.ReadFile(filepath.Join(dir, "coldstart.svg"))
	d := xml.NewDecoder(strings.NewReader(string(svg)))
	rects := 0
	for {
		tok, err := d.Token()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("SVG: %v", err)
		}
		if se, ok := tok.(xml.StartElement); ok && se.Name.Local == "rect" {
			rects++
		}
	}
	if n := len(r.medians); rects < n*2 {
		t.Errorf("SVG has %d rects, want a bar and its pull part for each of %d cells", rects, n)
	}

	// another WAN: issue 13's absolute times are not checked
	cfg.rtt = 50 * time.Millisecond
	if r := newReport(cfg, images, runs); !r.absSkipped || slices.ContainsFunc(r.goals, func(g goal) bool { return strings.Contains(g.Name, "≤ 1.2 s") }) {
		t.Errorf("absolute goals checked at 50 ms")
	}
}

// TestSelectModes: the modes come in allModes' order, default
// configurations first, whatever order they are listed in.
func TestSelectModes(t *testing.T) {
	ms, err := selectModes("prioritized-nobg,peer,lazy,overlayfs", true)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, m := range ms {
		names = append(names, m.name)
	}
	if got, want := strings.Join(names, ","), "overlayfs,lazy,peer,prioritized-nobg"; got != want {
		t.Errorf("selectModes = %s, want %s", got, want)
	}
	if _, err := selectModes("lazy,bogus", false); err == nil {
		t.Error("unknown mode accepted")
	}
	if _, err := selectModes("peer-lazy", false); err == nil {
		t.Error("peer-lazy accepted without a peer")
	}
	if got, want := defaultModes(false), "overlayfs,lazy,zstd,prioritized,learned,linerate,lazy-nobg,prioritized-nobg"; got != want {
		t.Errorf("defaultModes(false) = %s, want %s", got, want)
	}
	for _, m := range allModes() {
		if m.secondary() && !slices.ContainsFunc(allModes(), func(d mode) bool { return d.name == m.of && !d.secondary() && d.prioritized == m.prioritized }) {
			t.Errorf("mode %s varies %q, not a default mode on the same image", m.name, m.of)
		}
	}
}

func TestLayerLine(t *testing.T) {
	l := map[string]any{"digest": "sha256:0123456789abcdef0123", "state": "background", "fetched_bytes": 12.3e6, "requests": 40.0,
		"reads": 890.0, "errors": 0.0, "prefetch_done": true, "background_done": false, "read_around_bytes": 1e6}
	if got, want := layerLine(l), "sha256:0123456789ab background, 12.3 MB in 40 requests; prefetch_done, read_around_bytes 1000000, reads 890"; got != want {
		t.Errorf("layerLine = %q, want %q", got, want)
	}
}

func TestUnionLen(t *testing.T) {
	for _, tc := range []struct {
		spans [][2]int64
		want  int64
	}{
		{nil, 0},
		{[][2]int64{{0, 10}}, 10},
		{[][2]int64{{5, 10}, {0, 6}}, 10},
		{[][2]int64{{0, 4}, {6, 8}, {7, 12}, {1, 2}}, 10},
	} {
		if got := unionLen(tc.spans); got != tc.want {
			t.Errorf("unionLen(%v) = %d, want %d", tc.spans, got, tc.want)
		}
	}
}

func TestMissedBy(t *testing.T) {
	for _, tc := range []struct {
		name  string
		ratio float64
		want  string
	}{
		{"whole percent", 1.32, "32%"},
		{"under one percent", 1.0046, "0.46%"},
		{"a few bytes of a large total", 1.000002, "0.0002%"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := missedBy(tc.ratio); got != tc.want {
				t.Errorf("missedBy(%v) = %q, want %q", tc.ratio, got, tc.want)
			}
		})
	}
}

// TestSociSnapModes: soci-snapshotter's modes are opt-in (make bench-soci),
// and each runs on the image its pull mode needs: soci-snap on the gzip
// image with soci's own v2 index, soci-snap-parallel on the gzip image
// with no index (linerate's).
func TestSociSnapModes(t *testing.T) {
	w := allWorkloads()[0]
	for _, tc := range []struct {
		mode, tag, sociSnap string
	}{
		{"soci-snap", "soci-peer", sociLazy},
		{"soci-snap-parallel", "gzip", sociParallel},
		{"soci-peer", "soci-peer", ""},
		{"linerate", "gzip", ""},
	} {
		t.Run(tc.mode, func(t *testing.T) {
			ms, err := selectModes(tc.mode, false)
			if err != nil || len(ms) != 1 {
				t.Fatalf("selectModes(%s) = %v, %v", tc.mode, ms, err)
			}
			m := ms[0]
			if got := tagFor(benchConfig{}, w, m); got != tc.tag {
				t.Errorf("tagFor = %s, want %s", got, tc.tag)
			}
			if m.sociSnap != tc.sociSnap {
				t.Errorf("sociSnap = %q, want %q", m.sociSnap, tc.sociSnap)
			}
			if wantKind := map[bool]string{true: "soci-snapshotter", false: "lazysnap"}[tc.sociSnap != ""]; m.kind != wantKind {
				t.Errorf("kind = %s, want %s", m.kind, wantKind)
			}
			if m.sociSnap != "" && slices.Contains(strings.Split(defaultModes(true), ","), m.name) {
				t.Errorf("%s is among the default modes; soci-snapshotter's are opt-in", m.name)
			}
		})
	}
}

// TestSociSnapConfig: the config.toml soci-peer serve gets, read back as
// soci-snapshotter reads its keys.
func TestSociSnapConfig(t *testing.T) {
	type sociConfig struct {
		Resolver struct {
			Host map[string]struct {
				Mirrors []struct {
					Host     string `toml:"host"`
					Insecure bool   `toml:"insecure"`
				} `toml:"mirrors"`
			} `toml:"host"`
		} `toml:"resolver"`
		ContentStore struct {
			Type              string `toml:"type"`
			ContainerdAddress string `toml:"containerd_address"`
		} `toml:"content_store"`
		PullModes struct {
			Parallel struct {
				Enable  bool `toml:"enable"`
				Discard bool `toml:"discard_unpacked_layers"`
			} `toml:"parallel_pull_unpack"`
		} `toml:"pull_modes"`
	}
	const host, mirror, ctrd = "127.0.0.1:5001", "http://127.0.0.1:5001", "/tmp/lsctrd-1/c.sock"
	for _, tc := range []struct {
		name, sociSnap string
		parallel       bool
		wantErr        bool
	}{
		{name: "default configuration", sociSnap: sociLazy},
		{name: "parallel pull and unpack", sociSnap: sociParallel, parallel: true},
		{name: "unknown pull mode", sociSnap: "bogus", wantErr: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, err := sociSnapConfig(tc.sociSnap, host, mirror, ctrd)
			if tc.wantErr {
				if err == nil {
					t.Fatalf("no error; config:\n%s", s)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			var c sociConfig
			d := toml.NewDecoder(strings.NewReader(s))
			d.DisallowUnknownFields()
			if err := d.Decode(&c); err != nil {
				t.Fatalf("%v\n%s", err, s)
			}
			ms := c.Resolver.Host[host].Mirrors
			if len(ms) != 1 || ms[0].Host != mirror || !ms[0].Insecure {
				t.Errorf("mirrors of %s = %+v, want %s (with its scheme), insecure", host, ms, mirror)
			}
			if c.ContentStore.ContainerdAddress != ctrd || c.ContentStore.Type != "" {
				t.Errorf("content_store = %+v, want soci's default type on %s", c.ContentStore, ctrd)
			}
			if p := c.PullModes.Parallel; p.Enable != tc.parallel || p.Discard != tc.parallel {
				t.Errorf("parallel_pull_unpack = %+v, want enable and discard_unpacked_layers %v", p, tc.parallel)
			}
		})
	}
}

func TestSociSnapRef(t *testing.T) {
	for _, tc := range []struct{ name, ref, want string }{
		{"the registry's host", "127.0.0.1:5000/bench/python:gzip", "127.0.0.1:6000/bench/python:gzip"},
		{"another host's prefix", "127.0.0.1:50000/bench/python:gzip", "127.0.0.1:50000/bench/python:gzip"},
		{"another host", "example.com/bench/python:gzip", "example.com/bench/python:gzip"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := sociSnapRef(tc.ref, "127.0.0.1:5000", "127.0.0.1:6000"); got != tc.want {
				t.Errorf("sociSnapRef = %s, want %s", got, tc.want)
			}
		})
	}
}

// TestCheckSociSnapPull: a soci-snapshotter run counts only if soci took
// every layer the way its mode says.
func TestCheckSociSnapPull(t *testing.T) {
	lazy, parallel := mode{name: "soci-snap", sociSnap: sociLazy}, mode{name: "soci-snap-parallel", sociSnap: sociParallel}
	line := `{"level":"info","msg":"` + sociParallelLog + `"}` + "\n"
	for _, tc := range []struct {
		name      string
		m         mode
		layers    int
		pull, log string
		ok        bool
	}{
		{"lazy, every layer", lazy, 1, "pulled x in 1s: 1 of 1 layers lazy\n", "", true},
		{"lazy, fell back to containerd", lazy, 1, "pulled x in 1s: 0 of 1 layers lazy\n", "", false},
		{"lazy, one of two", lazy, 2, "pulled x in 1s: 1 of 2 layers lazy\n", "", false},
		{"parallel, every layer", parallel, 2, "0 of 2 layers lazy", line + line, true},
		{"parallel, containerd pulled", parallel, 1, "0 of 1 layers lazy", "", false},
		{"parallel, one of two", parallel, 2, "0 of 2 layers lazy", line, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := checkSociSnapPull(tc.m, tc.layers, tc.pull, tc.log); (err == nil) != tc.ok {
				t.Errorf("checkSociSnapPull = %v, want ok %v", err, tc.ok)
			}
		})
	}
}
