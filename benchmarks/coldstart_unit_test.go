package benchmarks

// Fast tests of the harness's own parts (they run in every go test).

import (
	"encoding/xml"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestWANBandwidth: one stream through the emulated link gets the
// configured rate, never more, and each request pays the round trip.
func TestWANBandwidth(t *testing.T) {
	const size, bw = 4 << 20, 50e6 / 8 // 4 MiB at 50 Mbit/s: 0.67 s
	body := make([]byte, size)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.Write(body) }))
	defer srv.Close()
	w := startWAN(t, srv.URL, 20*time.Millisecond, bw)
	start := time.Now()
	resp, err := http.Get(w.URL + "/v2/x/blobs/sha256:00")
	if err != nil {
		t.Fatal(err)
	}
	n, err := io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	took := time.Since(start)
	if err != nil || n != size {
		t.Fatalf("read %d bytes: %v", n, err)
	}
	want := time.Duration(float64(size)/bw*float64(time.Second)) + 40*time.Millisecond // + connection and request round trips
	if took < want-wanBurst || took > want*3/2 {
		t.Errorf("%d bytes took %s through the link, want about %s", size, took, want)
	}
	st := w.stats()
	if st.Requests != 1 || st.Bytes != size {
		t.Errorf("stats %+v", st)
	}
	if l := w.log(); len(l) != 1 || l[0].Kind != "whole blob" || l[0].Bytes != size {
		t.Errorf("log %+v", l)
	}
}

// TestWANRunsApart: a request an earlier run left hanging is reported by
// reset and counted neither in the new run's concurrency nor in its log.
func TestWANRunsApart(t *testing.T) {
	release := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasSuffix(r.URL.Path, "/hang") {
			<-release
		}
		w.Write([]byte("ok"))
	}))
	defer srv.Close()
	defer close(release)
	w := startWAN(t, srv.URL, 0, 0)
	go http.Get(w.URL + "/v2/x/blobs/hang")
	for w.stats().Requests == 0 {
		time.Sleep(time.Millisecond)
	}
	if left := w.reset(); left != 1 {
		t.Errorf("reset reports %d requests still in flight, want 1", left)
	}
	for range 2 {
		resp, err := http.Get(w.URL + "/v2/x/blobs/sha256:00")
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
	l := w.log()
	if len(l) != 2 || serialRequests(l) != 2 {
		t.Errorf("after the reset: %d requests logged, %d serial, want 2 and 2 (%+v)", len(l), serialRequests(l), l)
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
