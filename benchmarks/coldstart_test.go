package benchmarks

// The cold-start harness: an ordinary overlayfs pull against lazy starts
// through lazysnap (and optionally another remote snapshotter), each run
// with fresh containerd and snapshotter state, through an emulated WAN in
// front of a real registry. See README.md in this directory for how to run
// it; `make bench` runs it with the defaults.

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/lazysnap/lazysnap/internal/testenv"
	"github.com/lazysnap/lazysnap/internal/testenv/registry"
)

// Environment variables of the cold-start harness.
const (
	envBench      = "LAZYSNAP_BENCH"            // "1" runs TestColdStart
	envRTT        = "LAZYSNAP_BENCH_RTT"        // added round trip per request, e.g. "20ms"
	envMbits      = "LAZYSNAP_BENCH_MBITS"      // shared bandwidth cap in Mbit/s
	envRuns       = "LAZYSNAP_BENCH_RUNS"       // runs per workload and mode (median reported)
	envQuick      = "LAZYSNAP_BENCH_QUICK"      // "1": one run each
	envWorkloads  = "LAZYSNAP_BENCH_WORKLOADS"  // comma-separated subset of hello,imports,hash,walk,torch
	envModes      = "LAZYSNAP_BENCH_MODES"      // comma-separated subset of allModes
	envOut        = "LAZYSNAP_BENCH_OUT"        // where coldstart.{md,svg,json} go
	envCache      = "LAZYSNAP_BENCH_CACHE"      // where the gzip image layouts are kept between runs
	envPythonTar  = "LAZYSNAP_BENCH_PYTHON_TAR" // the rootfs tar with python3 (else mkimages.sh builds it)
	envTorch      = "LAZYSNAP_BENCH_TORCH"      // "1": the default workloads include torch even if its rootfs is not built yet
	envTorchTar   = "LAZYSNAP_BENCH_TORCH_TAR"  // the rootfs tar with python3-torch (else mkimages.sh builds it)
	envRootfsTar  = "LAZYSNAP_ROOTFS_TAR"       // the minbase tar; the python and torch tars are made beside it
	envBigMiB     = "LAZYSNAP_BENCH_BIG_MIB"    // size of the hashed file
	envSmallFiles = "LAZYSNAP_BENCH_FILES"      // number of files of the stat walk
	envPeer       = "LAZYSNAP_BENCH_PEER"       // binary of another remote snapshotter: adds modes peer-lazy and peer
	envPeerArgs   = "LAZYSNAP_BENCH_PEER_ARGS"  // its arguments ({{address}} {{root}} {{config}})
	envPeerConf   = "LAZYSNAP_BENCH_PEER_CONFIG"
	envPeerPull   = "LAZYSNAP_BENCH_PEER_PULL" // "rpull" (ctr-remote, default) or "lazysnap"
	envLogDir     = "LAZYSNAP_BENCH_LOGDIR"    // if set, every run's registry requests are written there
	envBaseBin    = "LAZYSNAP_BENCH_BASE_BIN"  // a lazysnap binary built from another commit: what the -base modes run
)

// removedEnv are settings of earlier versions of the harness that the
// modes replaced; a run that sets one stops, rather than measure something
// else than it asked for.
var removedEnv = map[string]string{
	"LAZYSNAP_BENCH_BACKGROUND": "background fetch is on in the default modes (lazy, prioritized, peer-lazy, peer) and off in lazy-nobg and prioritized-nobg",
	"LAZYSNAP_BENCH_PEER_IMAGE": "the peer gets both images: mode peer-lazy the unprofiled one, peer the prioritized one",
}

// benchConfig is the harness configuration, from the environment.
type benchConfig struct {
	rtt        time.Duration
	bandwidth  int64 // bytes per second, shared by all connections
	runs       int
	workloads  []workload
	modes      []mode
	outDir     string
	cacheDir   string
	pythonTar  string
	torchTar   string
	bigBytes   int64
	smallFiles int
	logDir     string
	baseBin    string
	peer       peerConfig
}

// peerConfig describes another remote snapshotter to compare with.
type peerConfig struct {
	bin, args, configTemplate, pull string
}

func envOr(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}

func loadConfig(t *testing.T) benchConfig {
	t.Helper()
	for name, why := range removedEnv {
		if os.Getenv(name) != "" {
			t.Fatalf("%s is no longer read: %s (LAZYSNAP_BENCH_MODES chooses)", name, why)
		}
	}
	c := benchConfig{
		outDir:   envOr(envOut, "results"),
		cacheDir: envOr(envCache, "/var/tmp/lazysnap-bench"),
		logDir:   os.Getenv(envLogDir),
	}
	var err error
	if c.rtt, err = time.ParseDuration(envOr(envRTT, "20ms")); err != nil {
		t.Fatalf("%s: %v", envRTT, err)
	}
	mbits, err := strconv.ParseFloat(envOr(envMbits, "100"), 64)
	if err != nil || mbits <= 0 {
		t.Fatalf("%s: want a positive number of Mbit/s", envMbits)
	}
	c.bandwidth = int64(mbits * 1e6 / 8)
	defRuns := "3"
	if os.Getenv(envQuick) == "1" {
		defRuns = "1"
	}
	if c.runs, err = strconv.Atoi(envOr(envRuns, defRuns)); err != nil || c.runs < 1 {
		t.Fatalf("%s: want a positive number", envRuns)
	}
	big, err := strconv.ParseInt(envOr(envBigMiB, "512"), 10, 64)
	if err != nil || big < 1 {
		t.Fatalf("%s: want a positive number of MiB", envBigMiB)
	}
	c.bigBytes = big << 20
	if c.smallFiles, err = strconv.Atoi(envOr(envSmallFiles, "100000")); err != nil || c.smallFiles < 100 {
		t.Fatalf("%s: want at least 100", envSmallFiles)
	}
	c.peer = peerConfig{
		bin:            os.Getenv(envPeer),
		args:           envOr(envPeerArgs, defaultPeerArgs),
		configTemplate: defaultPeerConfig,
		pull:           envOr(envPeerPull, "rpull"),
	}
	if p := os.Getenv(envPeerConf); p != "" {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatalf("%s: %v", envPeerConf, err)
		}
		c.peer.configTemplate = string(b)
	}
	modes, err := selectModes(envOr(envModes, defaultModes(c.peer.bin != "")), c.peer.bin != "")
	if err != nil {
		t.Fatalf("%s: %v", envModes, err)
	}
	c.modes = modes
	c.baseBin = os.Getenv(envBaseBin)
	if c.baseBin == "" && slices.ContainsFunc(modes, func(m mode) bool { return m.base }) {
		t.Fatalf("the -base modes need %s (a lazysnap binary built from the commit to compare with)", envBaseBin)
	}
	c.pythonTar = os.Getenv(envPythonTar)
	c.torchTar = os.Getenv(envTorchTar)
	// torch is opt-in while its rootfs is not built (mkimages.sh torch,
	// a few hundred MB from Debian's mirror)
	defWorkloads := "hello,imports,hash,walk"
	if _, err := os.Stat(envOr(envTorchTar, filepath.Join(rootfsDir(), "bookworm-torch.tar"))); err == nil || os.Getenv(envTorch) == "1" {
		defWorkloads += ",torch"
	}
	for _, name := range strings.Split(envOr(envWorkloads, defWorkloads), ",") {
		i := slices.IndexFunc(allWorkloads(), func(w workload) bool { return w.name == name })
		if i < 0 {
			t.Fatalf("%s: unknown workload %q", envWorkloads, name)
		}
		c.workloads = append(c.workloads, allWorkloads()[i])
	}
	return c
}

// rootfsDir is where mkimages.sh keeps its root filesystems: beside
// LAZYSNAP_ROOTFS_TAR, or /var/tmp/lazysnap-rootfs.
func rootfsDir() string {
	if p := os.Getenv(envRootfsTar); p != "" {
		return filepath.Dir(p)
	}
	return "/var/tmp/lazysnap-rootfs"
}

// defaultModes is LAZYSNAP_BENCH_MODES's default: every mode (the peer's
// only with a peer) but the SOCI ones and soci-snapshotter's (make
// bench-soci), whose soci-peer binary is a build of its own.
func defaultModes(peer bool) string {
	var names []string
	for _, m := range allModes() {
		if (m.kind != "peer" || peer) && m.soci == "" && m.sociSnap == "" && m.fetch == "" && !m.base {
			names = append(names, m.name)
		}
	}
	return strings.Join(names, ",")
}

// selectModes parses a comma-separated list of modes into allModes' order
// (each system's default configuration first, the secondary modes after),
// whatever the list's order.
func selectModes(list string, peer bool) ([]mode, error) {
	var out []mode
	for _, m := range allModes() {
		if !slices.Contains(strings.Split(list, ","), m.name) {
			continue
		}
		if m.kind == "peer" && !peer {
			return nil, fmt.Errorf("mode %s needs %s (the snapshotter's binary)", m.name, envPeer)
		}
		out = append(out, m)
	}
	for _, name := range strings.Split(list, ",") {
		if !slices.ContainsFunc(allModes(), func(m mode) bool { return m.name == name }) {
			return nil, fmt.Errorf("unknown mode %q", name)
		}
	}
	return out, nil
}

// workload is one command run in a container.
type workload struct {
	name  string
	title string
	image string   // which image: "python", "hash", "walk" or "torch"
	argv  []string // in the container
}

const (
	// importsScript imports a typical set of standard modules.
	importsScript = `import argparse, asyncio, base64, collections, csv, dataclasses, datetime, decimal
import email.message, hashlib, http.client, json, logging, pathlib, random, re, shutil
import socket, sqlite3, subprocess, tempfile, textwrap, typing, unittest, urllib.request
import uuid, xml.etree.ElementTree, zipfile
print("imported", len([m for m in globals() if not m.startswith("__")]), "modules")`
	hashScript = `import hashlib
h = hashlib.sha256()
with open("/data/big", "rb") as f:
    while b := f.read(1 << 20):
        h.update(b)
print(h.hexdigest())`
	walkScript = `import os
n = s = 0
for d, _, files in os.walk("/data/tree"):
    for f in files:
        s += os.lstat(os.path.join(d, f)).st_size
        n += 1
print(n, s)`
)

func allWorkloads() []workload {
	py := "/usr/bin/python3"
	return []workload{
		{"hello", `python3 -c 'print("hello")'`, "python", []string{py, "-c", `print("hello")`}},
		{"imports", "python3 -c 'import argparse, asyncio, … (28 standard modules)'", "python", []string{py, "-c", importsScript}},
		{"hash", "python3 -c '… hashlib.sha256 of /data/big (incompressible)'", "hash", []string{py, "-c", hashScript}},
		{"walk", "python3 -c '… os.walk and os.lstat over /data/tree (small files)'", "walk", []string{py, "-c", walkScript}},
		// Debian's PyTorch: a large realistic image (1.3 GB unpacked)
		// of which an import reads a part
		{"torch", "python3 -c 'import torch; print(torch.__version__)'", "torch", []string{py, "-c", "import torch; print(torch.__version__)"}},
	}
}

// mode is one way of pulling and starting: a snapshotter in a
// configuration and an image.
type mode struct {
	name  string
	title string
	kind  string // "overlayfs", "lazysnap", "peer" or "soci-snapshotter"
	// prioritized: the image is converted with the workload's files first
	// (recorded with convert/record); otherwise the plain eStargz conversion
	prioritized bool
	// noBackground: lazysnap's background fetch off, so that the bytes
	// fetched are what the start needs. Off (the default configuration of
	// each system) in the headline modes.
	noBackground bool
	// fetch: lines appended to lazysnap's [fetch] section, a variant of
	// the configuration to measure against the default in the same run
	// (not in LAZYSNAP_BENCH_MODES's default)
	fetch string
	// base: lazysnap is LAZYSNAP_BENCH_BASE_BIN, a build of another
	// commit (the one before a change), in the same round-robin as this
	// one's (not in LAZYSNAP_BENCH_MODES's default)
	base bool
	// of is the default-configuration mode a secondary mode varies
	of string
	// zstd: the unprofiled image converted to zstd:chunked instead of
	// eStargz (lazysnap convert -format zstd:chunked)
	zstd bool
	// learned: the unprofiled image, measured as the second node of a
	// cluster: an unmeasured cold start of the same workload first, by a
	// lazysnap with [profile] publish = true, pushes the profile it
	// learned to the registry, where the measured (default) lazysnap finds
	// it and prefetches it at mount
	learned bool
	// soci: the unmodified gzip image with a SOCI v2 index built by
	// "lazysnap" (lazysnap index) or by "soci" (soci-snapshotter's library,
	// as soci convert does, through the soci-peer oracle), or with none
	// but the v1 index a previous node's line-rate pull published
	// (sociLearned)
	soci string
	// lineRate: the unmodified gzip image with no index (overlayfs's),
	// which lazysnap pulls itself at line rate (issue 24)
	lineRate bool
	// sociSnap: soci-snapshotter itself (kind "soci-snapshotter", served
	// by soci-peer serve) in one of its pull modes: sociLazy, its default
	// (lazy loading with a SOCI v2 index: the image soci = "soci" names),
	// or sociParallel (parallel_pull_unpack with discard_unpacked_layers,
	// on the gzip image with no index)
	sociSnap string
}

// soci-snapshotter's pull modes in the harness (mode.sociSnap).
const (
	sociLazy     = "lazy"
	sociParallel = "parallel"
)

// secondary reports whether m is not a system in its default
// configuration: its columns come after the default ones.
func (m mode) secondary() bool { return m.of != "" }

// allModes are the modes in the report's order: each system in its default
// configuration, the peer beside lazysnap on the same image, then
// lazysnap with background fetch off.
func allModes() []mode {
	return []mode{
		{name: "overlayfs", title: "containerd's overlayfs, ordinary pull (gzip)", kind: "overlayfs"},
		{name: "lazy", title: "lazysnap, default configuration, unprofiled eStargz", kind: "lazysnap"},
		{name: "zstd", title: "lazysnap, default configuration, unprofiled zstd:chunked", kind: "lazysnap", zstd: true},
		{name: "peer-lazy", title: "peer, default configuration, unprofiled eStargz", kind: "peer"},
		{name: "prioritized", title: "lazysnap, default configuration, eStargz with the recorded files first", kind: "lazysnap", prioritized: true},
		{name: "peer", title: "peer, default configuration, eStargz with the recorded files first", kind: "peer", prioritized: true},
		{name: "learned", title: "lazysnap default, unprofiled image, profile learned by a previous node and fetched from the registry", kind: "lazysnap", learned: true},
		{name: "linerate", title: "lazysnap, default configuration, unmodified gzip with no index: pulled at line rate", kind: "lazysnap", lineRate: true},
		{name: "soci", title: "lazysnap, default configuration, unmodified gzip with a SOCI index (lazysnap index)", kind: "lazysnap", soci: "lazysnap"},
		{name: "soci-learned", title: "lazysnap default, unmodified gzip with no index, SOCI index learned by a previous node's line-rate pull (trusted repository)", kind: "lazysnap", soci: sociLearned},
		{name: "soci-peer", title: "lazysnap, default configuration, unmodified gzip with a SOCI index built by soci v0.16.1", kind: "lazysnap", soci: "soci"},
		{name: "soci-snap", title: "soci-snapshotter v0.16.1, default configuration, unmodified gzip with its own SOCI v2 index", kind: "soci-snapshotter", soci: "soci", sociSnap: sociLazy},
		{name: "soci-snap-parallel", title: "soci-snapshotter v0.16.1, parallel pull and unpack (discard_unpacked_layers), unmodified gzip with no index", kind: "soci-snapshotter", sociSnap: sociParallel},
		{name: "lazy-nobg", title: "lazysnap, background fetch off (bytes a start needs), unprofiled eStargz", kind: "lazysnap", noBackground: true, of: "lazy"},
		{name: "prioritized-nobg", title: "lazysnap, background fetch off (bytes a start needs), recorded files first", kind: "lazysnap", prioritized: true, noBackground: true, of: "prioritized"},
		{name: "soci-nobg", title: "lazysnap, background fetch off (bytes a start needs), gzip with a SOCI index (lazysnap index)", kind: "lazysnap", soci: "lazysnap", noBackground: true, of: "soci"},
		{name: "soci-peer-nobg", title: "lazysnap, background fetch off (bytes a start needs), gzip with a SOCI index built by soci v0.16.1", kind: "lazysnap", soci: "soci", noBackground: true, of: "soci-peer"},
		{name: "lazy-base", title: "lazysnap built from another commit (LAZYSNAP_BENCH_BASE_BIN), unprofiled eStargz", kind: "lazysnap", base: true, of: "lazy"},
		{name: "soci-peer-base", title: "lazysnap built from another commit (LAZYSNAP_BENCH_BASE_BIN), gzip with a SOCI index built by soci", kind: "lazysnap", soci: "soci", base: true, of: "soci-peer"},
		{name: "lazy-nopreempt", title: "lazysnap, background requests not stopped for readers (no_preempt), unprofiled eStargz", kind: "lazysnap", fetch: "no_preempt = true", of: "lazy"},
		{name: "soci-peer-nopreempt", title: "lazysnap, background requests not stopped for readers (no_preempt), gzip with a SOCI index built by soci", kind: "lazysnap", soci: "soci", fetch: "no_preempt = true", of: "soci-peer"},
	}
}

// binFor is the lazysnap binary mode m runs.
func (b *bench) binFor(m mode) string {
	if m.base {
		return b.cfg.baseBin
	}
	return b.bin
}

// bench is what every run shares: the binary, the registry and its WAN.
type bench struct {
	cfg benchConfig
	// dir is where the runs' daemons make their directories (runsFS), and
	// disk says what filesystem it is
	dir, disk string
	bin       string
	reg       *registry.Registry
	wan       *registry.WANProxy
	hosts     string
	images    *imageSet
}

// TestColdStart is the harness. It runs only with LAZYSNAP_BENCH=1 (and as
// root, with containerd, runc, FUSE and docker-registry installed).
func TestColdStart(t *testing.T) {
	if os.Getenv(envBench) != "1" {
		t.Skipf("set %s=1 to run the cold-start benchmark (make bench)", envBench)
	}
	testenv.NeedFUSE(t)
	cfg := loadConfig(t)
	started := time.Now()
	b := &bench{cfg: cfg, bin: buildLazysnap(t), hosts: t.TempDir()}
	b.dir, b.disk = runsFS(t, cfg)
	b.images = buildImages(t, cfg)
	t.Logf("images ready in %s", time.Since(started).Round(time.Second))

	b.reg = registry.Start(t, registry.Options{})
	b.wan = registry.StartWANProxy(t, b.reg.URL(), registry.WANOptions{RTT: cfg.rtt, BandwidthBytesPerSec: cfg.bandwidth})
	// the WAN as server and as mirror: ctr 1.6 (Debian bookworm) ignores
	// the server field of a hosts.toml and would go to the registry itself
	wanEP := registry.Endpoint{URL: b.wan.URL}
	if _, err := registry.WriteHostsConfig(b.hosts, b.reg.Host, wanEP, wanEP); err != nil {
		t.Fatal(err)
	}
	// soci-snapshotter's parallel pull goes to the host its image
	// reference names, whatever its mirrors: its modes name the WAN
	if _, err := registry.WriteHostsConfig(b.hosts, b.wan.Host, wanEP); err != nil {
		t.Fatal(err)
	}
	b.images.push(t, b.reg)

	var results []runResult
	var failures []failure
	for run := 1; run <= cfg.runs; run++ {
		for _, w := range cfg.workloads {
			for _, m := range cfg.modes {
				name := fmt.Sprintf("%s/%s/run%d", w.name, m.name, run)
				recorded := len(failures)
				ok := t.Run(name, func(t *testing.T) {
					r, err := b.coldStart(t, w, m, run)
					if err != nil {
						t.Error(err)
						failures = append(failures, failure{Workload: w.name, Mode: m.name, Run: run, Error: firstLines(err.Error(), 3)})
						return
					}
					r.Run = run
					t.Logf("%s: pull %.2fs, first output %.2fs, total %.2fs, %.1f MB in %d requests, peak %s %.0f MiB",
						name, r.Pull, r.FirstOutput, r.Total, float64(r.Bytes)/1e6, r.Requests, r.PeakOf, float64(r.PeakRSS)/(1<<20))
					results = append(results, r)
				})
				if !ok && len(failures) == recorded {
					failures = append(failures, failure{Workload: w.name, Mode: m.name, Run: run, Error: "set-up failed (see the test log)"})
				}
			}
		}
	}
	rep := newReport(cfg, b.images, results)
	rep.Failures = failures
	rep.Disk = b.disk
	rep.Elapsed = time.Since(started)
	if err := rep.write(cfg.outDir); err != nil {
		t.Fatal(err)
	}
	t.Logf("wrote %s in %s:\n%s", filepath.Join(cfg.outDir, "coldstart.md"), rep.Elapsed.Round(time.Second), rep.markdownTable())
}

// failure is a run that did not complete.
type failure struct {
	Workload, Mode string
	Run            int
	Error          string
}

// firstLines keeps the first n lines of s.
func firstLines(s string, n int) string {
	lines := strings.SplitN(s, "\n", n+1)
	return strings.Join(lines[:min(n, len(lines))], " / ")
}

// buildLazysnap builds the lazysnap binary for this test.
func buildLazysnap(t *testing.T) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "lazysnap")
	if out, err := exec.Command("go", "build", "-o", p, "../cmd/lazysnap").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return p
}
