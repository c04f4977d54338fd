package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"

	"github.com/lazysnap/lazysnap/config"
)

// TestOperations runs a daemon as an operator would watch it: logs in JSON
// and metrics scraped from serve (which merges the fuse manager's), after
// a lazy pull and run, a fallback and a FUSE request answered with an
// error.
//
// The shipped Grafana dashboard (dist/grafana/lazysnap.json) references
// only metrics the daemon exports: every metric name in its PromQL (panel
// targets and template variable queries) is a family of the scrape, or a
// histogram's _bucket, _sum or _count series. And every line serve and the
// manager write is one JSON object (but their stdout banners), containerd's
// log.G records included.
func TestOperations(t *testing.T) {
	s := startStack(t, "[log]\n  format = \"json\"\n[fetch]\n  no_background = true\n")
	gzipDir, esgzDir := buildImages(t)
	lazy, _ := s.pushLayout(t, esgzDir, "ops", "esgz")
	if out := s.pull(t, lazy); !strings.Contains(out, "2 of 2 layers lazy") {
		t.Fatalf("pull: %s\n%s", out, s.log())
	}
	if got := s.ctr(t, "run", "--rm", "--snapshotter", "lazysnap", lazy, "ops1", "/bin/sh", "-c", "cat /data/small"); got != "hello from a lazy layer\n" {
		t.Fatalf("container printed %q", got)
	}
	plain, _ := s.pushLayout(t, gzipDir, "ops", "gzip")
	if out := s.pull(t, plain); !strings.Contains(out, "0 of 2 layers lazy") {
		t.Fatalf("pull: %s", out)
	}
	// a FUSE request answered with an error: an attribute the file lacks
	var mp string
	for _, img := range s.status(t).Images {
		for _, l := range img.Layers {
			if l.Mountpoint != "" {
				mp = l.Mountpoint
			}
		}
	}
	if _, err := syscall.Getxattr(filepath.Join(mp, "data/small"), "user.none", make([]byte, 16)); err != syscall.ENODATA {
		t.Fatalf("getxattr on the lazy layer at %q: %v, want ENODATA", mp, err)
	}

	families := exported(scrape(t, unixClient(filepath.Join(s.dir, config.StatusSocketName)), "http://lazysnap/metrics"))
	for _, name := range []string{"lazysnap_mount_duration_seconds_count", "lazysnap_registry_request_duration_seconds_count", "lazysnap_fuse_operation_duration_seconds_count", "lazysnap_fuse_operation_errors_total"} {
		if !families[name] {
			t.Errorf("%s not exported", name)
		}
	}
	names := dashboardMetrics(t, "../../dist/grafana/lazysnap.json")
	if len(names) < 20 {
		t.Fatalf("the dashboard references only %d metrics: %v", len(names), names)
	}
	for _, n := range names {
		if !families[n] && !families[n+"_count"] { // a histogram is named by its series' base
			t.Errorf("the dashboard's %s is not a metric lazysnap exports", n)
		}
	}

	// the logs: one JSON object a line, serve's and the manager's
	s.stopLazysnap(t)
	var containerdRecord bool
	for _, name := range []string{filepath.Join(s.dir, "lazysnap.log"), filepath.Join(s.dir, "root", managerLogName)} {
		b, err := os.ReadFile(name)
		if err != nil {
			t.Fatal(err)
		}
		for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
			if strings.HasPrefix(line, "lazysnap serving on ") || strings.HasPrefix(line, "lazysnap fuse-manager serving on ") {
				continue // stdout
			}
			var rec map[string]any
			if err := json.Unmarshal([]byte(line), &rec); err != nil || rec["time"] == nil || rec["level"] == nil || rec["msg"] == nil {
				t.Fatalf("%s: not a JSON record: %q", filepath.Base(name), line)
			}
			// snapshotter/ logs through containerd's log.G
			if rec["msg"] == "lazysnap: layer mounted remotely" && rec["key"] != nil && rec["target"] != nil {
				containerdRecord = true
			}
		}
	}
	if !containerdRecord {
		t.Errorf("snapshotter/'s log.G records of the lazy mounts are not among the JSON records:\n%s", s.log())
	}
}

// exported names the metrics of a scrape: its series' names, a
// histogram's _bucket, _sum and _count included.
func exported(samples map[string]float64) map[string]bool {
	out := map[string]bool{}
	for series := range samples {
		name, _, _ := strings.Cut(series, "{")
		out[name] = true
	}
	return out
}

// dashboardMetrics returns the metric names in the PromQL of a Grafana
// dashboard: its panels' target expressions and its template variables'
// queries, wherever they nest.
func dashboardMetrics(t *testing.T, path string) []string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var dash any
	if err := json.Unmarshal(b, &dash); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	metric := regexp.MustCompile(`\b(?:lazysnap|go|process)_[a-zA-Z0-9_]+`)
	seen := map[string]bool{}
	var names []string
	var walk func(v any, key string)
	walk = func(v any, key string) {
		switch v := v.(type) {
		case map[string]any:
			for k, c := range v {
				walk(c, k)
			}
		case []any:
			for _, c := range v {
				walk(c, key)
			}
		case string:
			if key != "expr" && key != "query" && key != "definition" {
				return
			}
			for _, n := range metric.FindAllString(v, -1) {
				if !seen[n] {
					seen[n] = true
					names = append(names, n)
				}
			}
		}
	}
	walk(dash, "")
	return names
}
