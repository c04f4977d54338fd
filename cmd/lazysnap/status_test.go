package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/lazysnap/lazysnap/config"
	"github.com/lazysnap/lazysnap/fusemanager"
	"github.com/lazysnap/lazysnap/ops"
	"github.com/lazysnap/lazysnap/remote"
	"github.com/lazysnap/lazysnap/snapshotter"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

func hexDigest(c byte) string { return "sha256:" + strings.Repeat(string(c), 64) }

// sampleReport is a status with a lazy image (one layer partly fetched,
// one complete with errors) and a fallen-back image.
func sampleReport() ops.Report {
	return ops.Report{
		Version: "dev",
		Images: []ops.Image{
			{Ref: "registry.example/app:1", Layers: []ops.Layer{
				{Digest: hexDigest('a'), State: ops.StateLazy, Chunks: 80, ChunksPresent: 10, FetchedPercent: 12.5, FetchedBytes: 3<<20 + 1<<19, Profile: "prefetched from registry"},
				{Digest: hexDigest('b'), State: ops.StateComplete, Chunks: 2, ChunksPresent: 2, FetchedPercent: 100, FetchedBytes: 1536, Errors: 2, Verification: "verified"},
			}},
			{Ref: "registry.example/plain:1", Layers: []ops.Layer{
				{Digest: hexDigest('c'), State: ops.StateFallback, FallbackReason: "not-lazy", Error: "no TOC"},
			}},
		},
		Cache: &ops.Cache{DiskBytes: 12 << 20, DiskEntries: 40, DiskMaxBytes: 10 << 30, MemoryBytes: 1 << 20,
			MemEntries: 3, Hits: 120, MemoryHits: 20, Misses: 40},
		Registries:     map[string]ops.Registry{"registry.example": {Requests: 57, Bytes: 3<<20 + 100<<10}},
		RegistryErrors: map[string]int64{"unavailable": 2, "timeout": 0, "not_found": 1},
		Snapshotter:    &ops.SnapshotterStatus{RemoteMounts: 2, Fallbacks: map[string]uint64{"not-lazy": 1, "timeout": 0}},
		Verification:   &ops.Verification{Verified: 1, Bad: 2, CachedBytes: 2 << 20, FetchedBytes: 1 << 10},
		BadLayers: []ops.BadLayer{
			{Digest: hexDigest('d'), Reason: "digest differs", Time: time.Date(2026, 12, 6, 20, 0, 0, 0, time.UTC)},
			{Digest: hexDigest('e'), Index: hexDigest('f'), Reason: "file list differs", Time: time.Date(2026, 12, 6, 21, 0, 0, 0, time.UTC)},
		},
	}
}

const sampleTable = `IMAGE                     LAYER                FETCHED  BYTES    STATE                                     ERRORS
registry.example/app:1    sha256:aaaaaaaaaaaa  12.5%    3.5 MiB  lazy (profile: prefetched from registry)  0
registry.example/app:1    sha256:bbbbbbbbbbbb  100.0%   1.5 KiB  complete, verified                        2
registry.example/plain:1  sha256:cccccccccccc  -        -        fallback (not-lazy)                       -

cache: disk 12.0 MiB in 40 entries (limit 10.0 GiB), memory 1.0 MiB in 3 entries; 120 hits (20 from memory), 40 misses, 0 evictions
registry registry.example: 57 requests, 3.1 MiB received
registry errors: not_found 1, unavailable 2
verification: 1 verified, 2 bad, 0 errors; 2.0 MiB from the cache, 1.0 KiB fetched
BAD LAYER sha256:dddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddd (since 2026-12-06T20:00:00Z; new mounts fall back): digest differs
BAD LAYER sha256:eeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeee with index sha256:ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff (since 2026-12-06T21:00:00Z; new mounts fall back): file list differs
snapshotter: 2 lazy mounts, 0 line-rate pulls (0 B), 0 restored, 0 restore failures, 0 remounts, 0 unavailable
fallbacks: not-lazy 1
`

func TestWriteStatus(t *testing.T) {
	var b bytes.Buffer
	if err := ops.WriteText(&b, sampleReport()); err != nil {
		t.Fatal(err)
	}
	if b.String() != sampleTable {
		t.Fatalf("got:\n%s\nwant:\n%s", b.String(), sampleTable)
	}
	b.Reset()
	if err := ops.WriteText(&b, ops.Report{}); err != nil {
		t.Fatal(err)
	}
	if want := "IMAGE  LAYER  FETCHED  BYTES  STATE  ERRORS\n(no lazy layers)\n\n"; b.String() != want {
		t.Fatalf("empty status:\n%q\nwant\n%q", b.String(), want)
	}
}

// serveUnix serves h on a unix socket until the test ends.
func serveUnix(t *testing.T, h http.Handler) string {
	t.Helper()
	dir, err := os.MkdirTemp("/tmp", "lzs-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	p := filepath.Join(dir, config.StatusSocketName)
	l, err := net.Listen("unix", p)
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: h}
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })
	return p
}

// TestStatusCommand runs `lazysnap status` against a status endpoint found
// by socket, by URL and through serve's configuration file.
func TestStatusCommand(t *testing.T) {
	rep := sampleReport()
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/status" {
			http.NotFound(w, r)
			return
		}
		json.NewEncoder(w).Encode(rep)
	})
	sock := serveUnix(t, h)
	cfg := filepath.Join(t.TempDir(), "lazysnap.toml")
	os.WriteFile(cfg, []byte(fmt.Sprintf("address = %q\n", filepath.Join(filepath.Dir(sock), "lazysnap.sock"))), 0o644)
	cfgExplicit := filepath.Join(t.TempDir(), "explicit.toml")
	os.WriteFile(cfgExplicit, []byte(fmt.Sprintf("address = \"/nonexistent/lazysnap.sock\"\nstatus_address = %q\n", sock)), 0o644)
	for _, args := range [][]string{
		{"--address", sock},
		{"--config", cfg},
		{"--config", cfgExplicit},
	} {
		var stdout, stderr bytes.Buffer
		if code := run(append([]string{"status"}, args...), &stdout, &stderr); code != 0 {
			t.Fatalf("status %v: exit %d: %s", args, code, stderr.String())
		}
		if stdout.String() != sampleTable {
			t.Fatalf("status %v printed:\n%s", args, stdout.String())
		}
	}

	var stdout, stderr bytes.Buffer
	if code := run([]string{"status", "--address", sock, "--json"}, &stdout, &stderr); code != 0 {
		t.Fatalf("status --json: exit %d: %s", code, stderr.String())
	}
	var got ops.Report
	if err := json.Unmarshal(stdout.Bytes(), &got); err != nil {
		t.Fatalf("status --json is not JSON: %v\n%s", err, stdout.String())
	}
	if len(got.Images) != 2 || got.Images[0].Layers[0].FetchedPercent != 12.5 || got.Images[1].Layers[0].FallbackReason != "not-lazy" {
		t.Fatalf("status --json: %+v", got)
	}
	for _, key := range []string{`"fetched_percent": 12.5`, `"fallback_reason": "not-lazy"`, `"disk_bytes": 12582912`} {
		if !strings.Contains(stdout.String(), key) {
			t.Errorf("status --json lacks %s:\n%s", key, stdout.String())
		}
	}

	// over TCP, by URL
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: h}
	go srv.Serve(l)
	defer srv.Close()
	stdout.Reset()
	if code := run([]string{"status", "--address", "http://" + l.Addr().String() + "/"}, &stdout, &stderr); code != 0 || stdout.String() != sampleTable {
		t.Fatalf("status by URL: exit %d\n%s%s", code, stdout.String(), stderr.String())
	}

	// errors
	for _, tc := range []struct {
		args []string
		code int
		msg  string
	}{
		{[]string{"--address", filepath.Join(t.TempDir(), "none.sock")}, 1, "is lazysnap serve running?"},
		{[]string{"--address", sock + "x"}, 1, "is lazysnap serve running?"},
		{[]string{"--config", filepath.Join(t.TempDir(), "none.toml")}, 1, "no such file"},
		{[]string{"extra"}, 2, "no arguments expected"},
		{[]string{"--bogus"}, 2, "flag provided but not defined"},
	} {
		var stdout, stderr bytes.Buffer
		if code := run(append([]string{"status"}, tc.args...), &stdout, &stderr); code != tc.code || !strings.Contains(stderr.String(), tc.msg) {
			t.Errorf("status %v: exit %d, stderr %q; want %d, %q", tc.args, code, stderr.String(), tc.code, tc.msg)
		}
	}
	bad := serveUnix(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { http.Error(w, "boom", 500) }))
	stderr.Reset()
	if code := run([]string{"status", "--address", bad}, &stdout, &stderr); code != 1 || !strings.Contains(stderr.String(), "500") {
		t.Errorf("status from a failing server: exit %d, %q", code, stderr.String())
	}
}

// failingSource is a remote.Source whose manifest lookup fails, or returns
// desc when set.
type failingSource struct{ desc *ocispec.Descriptor }

func (s failingSource) Layer(ctx context.Context, ref string, dg digest.Digest) (ocispec.Descriptor, error) {
	if s.desc != nil {
		return *s.desc, nil
	}
	return ocispec.Descriptor{}, fmt.Errorf("%s: registry down", ref)
}

func (failingSource) Blob(ctx context.Context, ref string, desc ocispec.Descriptor) (remote.Blob, error) {
	return nil, fmt.Errorf("registry down")
}

// scrape returns the samples of a text-format exposition, by series
// (`name{labels}` as printed).
func scrape(t *testing.T, client *http.Client, url string) map[string]float64 {
	t.Helper()
	resp, err := client.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("GET %s: %s", url, resp.Status)
	}
	out := map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			t.Fatalf("metrics line %q: %v", line, err)
		}
		out[line[:i]] = v
	}
	return out
}

// sum adds the samples of a metric (any labels).
func sum(samples map[string]float64, name string) (float64, bool) {
	var total float64
	found := false
	for k, v := range samples {
		if k == name || strings.HasPrefix(k, name+"{") {
			total += v
			found = true
		}
	}
	return total, found
}

func unixClient(sock string) *http.Client {
	return &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "unix", sock)
	}}}
}

// TestServeOps runs lazysnap serve in-process with metrics_address set: the
// status socket and the TCP address serve /metrics and /status, and
// `lazysnap status` finds the socket from the configuration file. It does
// so with the layers served in serve's process and by a fuse manager (run
// in this process too, so that serve finds it and starts none).
func TestServeOps(t *testing.T) {
	for _, tc := range []struct {
		name    string
		manager bool
	}{
		{"in-process", false},
		{"fuse manager", true},
	} {
		t.Run(tc.name, func(t *testing.T) { testServeOps(t, tc.manager) })
	}
}

func testServeOps(t *testing.T, manager bool) {
	dir, err := os.MkdirTemp("/tmp", "lzs-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	metricsAddr := l.Addr().String()
	l.Close()
	cfgPath := filepath.Join(dir, "lazysnap.toml")
	// /status over TCP only when asked (metrics_serve_status): asked in-process
	cfg := fmt.Sprintf("root = %q\naddress = %q\nmetrics_address = %q\nmetrics_serve_status = %v\n[registry]\n  hosts_dir = %q\n  docker_config = %q\n",
		filepath.Join(dir, "root"), filepath.Join(dir, "lazysnap.sock"), metricsAddr, !manager, filepath.Join(dir, "hosts"), filepath.Join(dir, "none.json"))
	cfg += fmt.Sprintf("[fuse_manager]\n  enable = %v\n", manager)
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	if manager {
		mctx, mcancel := context.WithCancel(context.Background())
		mdone := make(chan error, 1)
		go func() { mdone <- runFuseManager(mctx, []string{"--config", cfgPath}, io.Discard, io.Discard) }()
		defer func() {
			mcancel()
			if err := <-mdone; err != nil {
				t.Errorf("fuse manager: %v", err)
			}
			// its fd keeper (this test binary as lazysnap) holds nothing:
			// SIGTERM ends it
			stopKeeper(t, filepath.Join(dir, "root"))
		}()
		c := fusemanager.NewClient(filepath.Join(dir, "root", config.ManagerSocketName))
		for i := 0; ; i++ {
			h, err := c.Health(context.Background())
			if err == nil {
				if h.PID != os.Getpid() || h.Version != version {
					t.Fatalf("health: %+v", h)
				}
				break
			}
			if i > 400 {
				t.Fatalf("fuse manager did not start: %v", err)
			}
			time.Sleep(25 * time.Millisecond)
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	var serveOut bytes.Buffer
	go func() { done <- runServe(ctx, []string{"--config", cfgPath}, &serveOut, io.Discard) }()
	defer func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("serve: %v", err)
			}
		case <-time.After(20 * time.Second):
			t.Error("serve did not stop")
		}
	}()
	sock := filepath.Join(dir, config.StatusSocketName)
	for i := 0; ; i++ {
		if _, err := os.Stat(filepath.Join(dir, "lazysnap.sock")); err == nil {
			break
		}
		select {
		case err := <-done:
			t.Fatalf("serve stopped: %v", err)
		default:
		}
		if i > 400 {
			t.Fatal("serve did not start")
		}
		time.Sleep(25 * time.Millisecond)
	}
	for _, p := range []string{sock, filepath.Join(dir, "lazysnap.sock")} {
		if fi, err := os.Stat(p); err != nil || fi.Mode()&os.ModeSocket == 0 || fi.Mode().Perm() != 0o600 {
			t.Fatalf("socket %s: %v %v, want mode 0600", p, fi, err)
		}
	}
	for name, get := range map[string]func() map[string]float64{
		"tcp":  func() map[string]float64 { return scrape(t, http.DefaultClient, "http://"+metricsAddr+"/metrics") },
		"unix": func() map[string]float64 { return scrape(t, unixClient(sock), "http://lazysnap/metrics") },
	} {
		samples := get()
		for series, want := range map[string]float64{
			"lazysnap_layers_mounted":                                       0,
			`lazysnap_snapshotter_fallbacks_total{reason="not-lazy"}`:       0,
			"lazysnap_snapshotter_remote_mounts_total":                      0,
			`lazysnap_cache_hits_total{tier="disk"}`:                        0,
			`lazysnap_registry_errors_total{kind="unavailable"}`:            0,
			"lazysnap_read_fetch_wait_seconds_count":                        0,
			`lazysnap_build_info{version="dev"}`:                            1,
			`lazysnap_cache_entries{tier="memory"}`:                         0,
			"lazysnap_snapshotter_unavailable_layers":                       0,
			"lazysnap_cache_max_bytes":                                      samples["lazysnap_cache_max_bytes"],
			`lazysnap_read_fetch_wait_seconds_bucket{le="+Inf"}`:            0,
			`lazysnap_snapshotter_fallbacks_total{reason="missing-labels"}`: 0,
		} {
			if got, ok := samples[series]; !ok || got != want {
				t.Errorf("%s: %s = %v (present %v), want %v", name, series, got, ok, want)
			}
		}
		if samples["lazysnap_cache_max_bytes"] <= 0 {
			t.Errorf("%s: no disk cache limit", name)
		}
		if _, ok := sum(samples, "go_goroutines"); !ok {
			t.Errorf("%s: no Go runtime metrics", name)
		}
		if _, ok := samples[`go_goroutines{daemon="fuse-manager"}`]; ok != manager {
			t.Errorf("%s: the fuse manager's own metrics present: %v, want %v", name, ok, manager)
		}
		if up, ok := samples["lazysnap_fuse_manager_up"]; ok != manager || manager && up != 1 {
			t.Errorf("%s: lazysnap_fuse_manager_up = %v (present %v), want 1 with a manager", name, up, ok)
		}
	}
	var stdout, stderr bytes.Buffer
	if code := run([]string{"status", "--config", cfgPath}, &stdout, &stderr); code != 0 || !strings.Contains(stdout.String(), "(no lazy layers)") {
		t.Fatalf("status: exit %d\n%s%s", code, stdout.String(), stderr.String())
	}
	stdout.Reset()
	statusAddr := "http://" + metricsAddr
	if manager {
		// metrics_serve_status = false: the TCP address serves no /status
		resp, err := http.Get(statusAddr + "/status")
		if err != nil || resp.StatusCode != http.StatusNotFound {
			t.Fatalf("/status over TCP without metrics_serve_status: %v %v, want 404", resp, err)
		}
		resp.Body.Close()
		statusAddr = sock
	}
	if code := run([]string{"status", "--address", statusAddr, "--json"}, &stdout, &stderr); code != 0 {
		t.Fatalf("status over TCP: exit %d\n%s", code, stderr.String())
	}
	var rep ops.Report
	if err := json.Unmarshal(stdout.Bytes(), &rep); err != nil || rep.Version != "dev" || rep.Cache == nil || rep.Snapshotter == nil || len(rep.Images) != 0 {
		t.Fatalf("status over TCP: %v %+v", err, rep)
	}
	if fm := rep.FuseManager; (fm != nil) != manager || manager && (fm.PID != os.Getpid() || fm.Error != "") {
		t.Fatalf("status: fuse manager %+v, want one: %v", fm, manager)
	}
}

// TestStatusEndToEnd pulls a lazy and a plain image through containerd and
// lazysnap (the binary), runs a container that reads a little of the lazy
// one, then checks that `lazysnap status` and /metrics report what
// happened: the lazy layers partly fetched, bytes and requests to the
// registry, read waits, cache misses, the plain image's layers pulled at
// line rate with the reason they were not lazy.
func TestStatusEndToEnd(t *testing.T) {
	s := startStack(t, "[fetch]\n  no_background = true\n")
	gzipDir, esgzDir := buildImages(t)
	ref, _ := s.pushLayout(t, esgzDir, "status", "esgz")
	plainRef, _ := s.pushLayout(t, gzipDir, "status", "gzip")
	var idx ocispec.Index
	var m ocispec.Manifest
	readJSON(t, filepath.Join(esgzDir, "index.json"), &idx)
	readJSON(t, filepath.Join(esgzDir, "blobs", "sha256", idx.Manifests[0].Digest.Encoded()), &m)
	dataLayer := m.Layers[1].Digest.String()

	if out := s.pull(t, ref); !strings.Contains(out, "2 of 2 layers lazy") {
		t.Fatalf("pull: %s", out)
	}
	if got := s.ctr(t, "run", "--rm", "--snapshotter", "lazysnap", ref, "status1", "/bin/sh", "-c", "cat /data/small"); got != "hello from a lazy layer\n" {
		t.Fatalf("container printed %q", got)
	}
	if out := s.pull(t, plainRef); !strings.Contains(out, "0 of 2 layers lazy") {
		t.Fatalf("pull of the gzip image: %s", out)
	}

	sock := filepath.Join(s.dir, config.StatusSocketName)
	out, err := exec.Command(s.bin, "status", "--address", sock, "--json").CombinedOutput()
	if err != nil {
		t.Fatalf("lazysnap status --json: %v\n%s", err, out)
	}
	var rep ops.Report
	if err := json.Unmarshal(out, &rep); err != nil {
		t.Fatalf("lazysnap status --json: %v\n%s", err, out)
	}
	t.Logf("status:\n%s", out)
	var lazy, plain *ops.Image
	for i := range rep.Images {
		switch rep.Images[i].Ref {
		case ref:
			lazy = &rep.Images[i]
		case plainRef:
			plain = &rep.Images[i]
		}
	}
	if lazy == nil || len(lazy.Layers) != 2 {
		t.Fatalf("status does not list the lazy image %s with 2 layers:\n%s", ref, out)
	}
	var data ops.Layer
	for _, l := range lazy.Layers {
		if l.State != ops.StateLazy && l.State != ops.StateComplete {
			t.Errorf("layer %s: state %q, want lazy (background fetch is off)", l.Digest, l.State)
		}
		if l.Errors != 0 || l.Mountpoint == "" || l.Chunks == 0 {
			t.Errorf("layer %+v", l)
		}
		if l.Digest == dataLayer {
			data = l
		}
	}
	// the container read data/small, not the 28 MB of data/big and data/other
	if data.Digest == "" || data.FetchedPercent <= 0 || data.FetchedPercent >= 50 || data.ChunksPresent == 0 ||
		data.FetchedBytes <= 0 || data.CacheBytes <= 0 || data.Reads == 0 || data.State != ops.StateLazy {
		t.Errorf("data layer %s: %+v, want partly fetched", dataLayer, data)
	}
	if plain == nil || len(plain.Layers) != 2 {
		t.Fatalf("status does not list the gzip image %s's 2 layers:\n%s", plainRef, out)
	}
	for _, l := range plain.Layers {
		if l.State != ops.StatePulled || l.Path != ops.PathLineRate || l.FallbackReason != string(snapshotter.ReasonNotLazy) ||
			!strings.Contains(l.NotLazy, "no lazily loadable format") || l.Ztoc != "kept" || l.FetchedBytes <= 0 || l.PullSeconds <= 0 {
			t.Errorf("gzip image layer: %+v, want one not lazy, pulled at line rate, its zTOC kept", l)
		}
	}
	if rep.Snapshotter == nil || rep.Snapshotter.RemoteMounts != 2 || rep.Snapshotter.LineRatePulls != 2 || rep.Snapshotter.Fallbacks["not-lazy"] != 0 {
		t.Errorf("snapshotter status: %+v", rep.Snapshotter)
	}

	// the human table, with the socket found through the configuration
	out, err = exec.Command(s.bin, "status", "--config", filepath.Join(s.dir, "lazysnap.toml")).CombinedOutput()
	if err != nil {
		t.Fatalf("lazysnap status: %v\n%s", err, out)
	}
	t.Logf("lazysnap status:\n%s", out)
	for _, want := range []string{
		ref + "  " + ops.ShortDigest(dataLayer) + "  " + fmt.Sprintf("%.1f%%", data.FetchedPercent),
		plainRef, "pulled at line rate in ", "(not lazy)", "not lazy: not-lazy: layer ",
	} {
		if !strings.Contains(string(out), want) {
			t.Errorf("lazysnap status lacks %q", want)
		}
	}

	samples := scrape(t, unixClient(sock), "http://lazysnap/metrics")
	positive := func(name string) float64 {
		t.Helper()
		v, ok := sum(samples, name)
		if !ok || v <= 0 {
			t.Errorf("%s = %v (present %v), want > 0", name, v, ok)
		}
		return v
	}
	positive("lazysnap_registry_requests_total")
	positive("lazysnap_registry_bytes_total")
	positive("lazysnap_cache_misses_total")
	positive("lazysnap_read_fetch_wait_seconds_count")
	positive("lazysnap_read_fetch_wait_seconds_sum")
	if got := samples[fmt.Sprintf("lazysnap_layer_chunks_present{layer=%q}", dataLayer)]; got != float64(data.ChunksPresent) {
		t.Errorf("lazysnap_layer_chunks_present of the data layer = %v, status says %d", got, data.ChunksPresent)
	}
	if got := samples[fmt.Sprintf("lazysnap_layer_chunks{layer=%q}", dataLayer)]; got != float64(data.Chunks) {
		t.Errorf("lazysnap_layer_chunks of the data layer = %v, status says %d", got, data.Chunks)
	}
	if got := samples[fmt.Sprintf("lazysnap_layer_fetched_bytes_total{layer=%q}", dataLayer)]; got != float64(data.FetchedBytes) {
		t.Errorf("lazysnap_layer_fetched_bytes_total of the data layer = %v, status says %d", got, data.FetchedBytes)
	}
	for series, want := range map[string]float64{
		"lazysnap_layers_mounted":                                 2,
		"lazysnap_snapshotter_remote_mounts_total":                2,
		`lazysnap_snapshotter_fallbacks_total{reason="not-lazy"}`: 0,
		"lazysnap_snapshotter_line_rate_pulls_total":              2,
	} {
		if samples[series] != want {
			t.Errorf("%s = %v, want %v", series, samples[series], want)
		}
	}
	if errs, _ := sum(samples, "lazysnap_layer_errors_total"); errs != 0 {
		t.Errorf("layer errors: %v", errs)
	}
	// the registry bytes cover at least what the layers received
	if reg, _ := sum(samples, "lazysnap_registry_bytes_total"); reg < float64(data.FetchedBytes) {
		t.Errorf("registry bytes %v < the data layer's fetched bytes %d", reg, data.FetchedBytes)
	}
}
