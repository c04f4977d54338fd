package benchmarks

// Fast tests of the harness's own parts (they run in every go test).

import (
	"encoding/xml"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/lazysnap/lazysnap/internal/testenv/registry"
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
// the table and the goals, the SVG is well-formed XML.
func TestColdStartReport(t *testing.T) {
	cfg := benchConfig{rtt: 20 * time.Millisecond, bandwidth: 12_500_000, runs: 3, bigBytes: 512 << 20, smallFiles: 100000}
	cfg.workloads = allWorkloads()
	cfg.modes = allModes()[:3]
	var runs []runResult
	for run := 1; run <= 3; run++ {
		for i, w := range cfg.workloads {
			for j, m := range cfg.modes {
				total := float64(i+1) * float64(3-j) * (1 + 0.01*float64(run))
				runs = append(runs, runResult{Workload: w.name, Mode: m.name, Run: run, Pull: total / 3, FirstOutput: total / 2,
					Total: total, Bytes: int64(total * 1e6), Requests: int64(10 * (j + 1)), PeakRSS: 50 << 20, PeakOf: "lazysnap"})
			}
		}
	}
	r := newReport(cfg, nil, runs)
	if len(r.medians) != 12 {
		t.Fatalf("%d medians, want 12", len(r.medians))
	}
	if m := r.find("hash", "overlayfs"); m == nil || m.Total != 9*1.02 {
		t.Fatalf("median of hash/overlayfs: %+v", m)
	}
	dir := t.TempDir()
	if err := r.write(dir); err != nil {
		t.Fatal(err)
	}
	md, _ := os.ReadFile(filepath.Join(dir, "coldstart.md"))
	for _, want := range []string{"| hello | lazy |", "hello total ≤ 1.2 ×", "hash total ≤ 1.1 × 512 MiB", "![total time"} {
		if !strings.Contains(string(md), want) {
			t.Errorf("markdown lacks %q:\n%s", want, md)
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
	if rects < 12*2 {
		t.Errorf("SVG has %d rects, want a bar and its pull part for each of 12 cells", rects)
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
