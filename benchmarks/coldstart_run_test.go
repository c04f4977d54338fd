package benchmarks

// One cold start: a new containerd (new root) and a new snapshotter root,
// a pull through the emulated WAN, and a container run whose first byte of
// output is timestamped.

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	ctrdenv "github.com/lazysnap/lazysnap/internal/testenv/containerd"
	"github.com/lazysnap/lazysnap/internal/testenv/registry"
)

// runTimeout bounds each pull and each container run.
const runTimeout = 15 * time.Minute

// Defaults for the peer snapshotter: containerd-stargz-grpc's flags and
// configuration, its registry mirror pointed at the emulated WAN and
// nothing else set, so that it runs in its default configuration
// (background fetch on, prioritized files prefetched), as lazysnap does.
const (
	defaultPeerArgs   = "--address {{address}} --root {{root}} --config {{config}} --log-level info"
	defaultPeerConfig = `[[resolver.host."{{registry}}".mirrors]]
  host = "{{mirror}}"
  insecure = true
`
)

// runResult is one measured cold start. Times are in seconds; FirstOutput
// and Total count from the start of the pull.
type runResult struct {
	Workload    string  `json:"workload"`
	Mode        string  `json:"mode"`
	Run         int     `json:"run"`
	Pull        float64 `json:"pull_s"`
	FirstOutput float64 `json:"first_output_s"`
	Total       float64 `json:"total_s"`
	Bytes       int64   `json:"registry_bytes"`
	Requests    int64   `json:"registry_requests"`
	PullBytes   int64   `json:"pull_registry_bytes"`
	PullReqs    int64   `json:"pull_registry_requests"`
	Kinds       string  `json:"requests_by_kind"`
	SerialReqs  int     `json:"serial_requests"` // made while no other was in flight
	PeakRSS     int64   `json:"peak_rss_bytes"`  // VmHWM
	PeakOf      string  `json:"peak_of"`         // whose: the snapshotter, or containerd for overlayfs
	// Layers is lazysnap's per-layer status (`lazysnap status --json`) at
	// the container's exit: fetched bytes, requests, reads, state, and
	// whatever else this lazysnap reports per layer
	Layers []map[string]any `json:"lazysnap_layers,omitempty"`
}

// coldStart runs workload w in mode m once, from nothing. A failed pull or
// run is returned as an error (with the snapshotter's log); a failure to
// set up fails t.
func (b *bench) coldStart(t *testing.T, w workload, m mode, run int) (runResult, error) {
	v := b.images.variant(b.cfg, w, m)
	ref := v.ref
	r := runResult{Workload: w.name, Mode: m.name}
	if m.learned {
		// the first node of the cluster, unmeasured: its profile is in
		// the registry before this node starts
		var err error
		if ref, err = b.learnProfile(t, w, v, run); err != nil {
			return r, err
		}
	}
	if m.kind == "soci-snapshotter" {
		ref = sociSnapRef(ref, b.reg.Host, b.wan.Host)
	}
	var lazysnapExtra string
	if m.soci == sociLearned {
		// the first node of the cluster, unmeasured: the SOCI index of
		// its line-rate pull is in the registry before this node starts
		var err error
		if ref, lazysnapExtra, err = b.learnIndex(t, w, v, run); err != nil {
			return r, err
		}
	}
	var d *daemon
	var extra, snapshotter, sociDir string
	proxy := func(sock string) string {
		return fmt.Sprintf("[proxy_plugins.%s]\n  type = \"snapshot\"\n  address = %q\n", snapshotter, sock)
	}
	switch m.kind {
	case "lazysnap":
		d, snapshotter = b.startLazysnap(t, m, lazysnapExtra), "lazysnap"
	case "peer":
		d, snapshotter = b.startPeer(t, m), "peer"
	case "soci-snapshotter":
		// started once containerd is up (its content store client);
		// containerd dials the proxy plugin on first use
		sociDir, snapshotter = b.shortDir(t, "lzsoci-"), sociSnapshotter
		t.Cleanup(func() { os.RemoveAll(sociDir) }) // if containerd fails to start
		extra = proxy(sociSnapSocket(sociDir))
	}
	if d != nil {
		extra = proxy(d.sock)
		t.Cleanup(d.stop) // if containerd fails to start
	}
	ctrd := ctrdenv.Start(t, ctrdenv.Options{ExtraConfig: extra, LogLevel: "warn", Dir: b.dir})
	if sociDir != "" {
		d = b.startSociSnap(t, m, sociDir, ctrd.Address())
	}
	if d != nil {
		t.Cleanup(d.stop) // before containerd's cleanup
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*runTimeout)
	defer cancel()
	ctr := func(args ...string) []string {
		return append([]string{"--address", ctrd.Address(), "--namespace", ctrd.Namespace()}, args...)
	}

	var pull *exec.Cmd
	switch {
	case m.kind == "overlayfs":
		pull = exec.CommandContext(ctx, "ctr", ctr("images", "pull", "--hosts-dir", b.hosts, ref)...)
	case m.kind == "peer" && b.cfg.peer.pull == "rpull":
		pull = exec.CommandContext(ctx, "ctr-remote", ctr("images", "rpull", "--snapshotter", snapshotter, "--hosts-dir", b.hosts, ref)...)
	default:
		pull = exec.CommandContext(ctx, b.binFor(m), "pull", "--address", ctrd.Address(), "--namespace", ctrd.Namespace(),
			"--snapshotter", snapshotter, "--hosts-dir", b.hosts, ref)
	}
	if left := b.wan.Reset(); left > 0 {
		t.Logf("%d requests of an earlier run are still in flight at the WAN (not counted in this run)", left)
	}
	start := time.Now()
	out, err := pull.CombinedOutput()
	pullTime := time.Since(start)
	pst := b.wan.Stats()
	r.PullBytes, r.PullReqs = pst.ResponseBytes, pst.Requests
	if err != nil {
		return r, fmt.Errorf("pull %s: %v\n%s%s", ref, err, out, d.keepLog(b.cfg.logDir, t.Name()))
	}
	switch want := fmt.Sprintf("0 of %d layers lazy, %d pulled at line rate", v.layers, v.layers); {
	case m.lineRate && !strings.Contains(string(out), want):
		return r, fmt.Errorf("not every layer was pulled at line rate (want %q):\n%s%s", want, out, d.keepLog(b.cfg.logDir, t.Name()))
	case m.kind == "lazysnap" && !m.lineRate && !strings.Contains(string(out), fmt.Sprintf("%d of %d layers lazy", v.layers, v.layers)):
		return r, fmt.Errorf("not every layer was mounted lazily:\n%s%s", out, d.keepLog(b.cfg.logDir, t.Name()))
	}
	if m.kind == "soci-snapshotter" {
		logb, _ := os.ReadFile(d.log)
		if err := checkSociSnapPull(m, v.layers, string(out), string(logb)); err != nil {
			return r, fmt.Errorf("%w%s", err, d.keepLog(b.cfg.logDir, t.Name()))
		}
		d.keepLog(b.cfg.logDir, t.Name()) // what it did, beside the WAN's log
	}

	args := []string{"run", "--rm"}
	if snapshotter != "" {
		args = append(args, "--snapshotter", snapshotter)
	}
	args = append(append(args, ref, "bench-"+w.name), w.argv...)
	first, runTime, stdout, stderr, err := timedRun(ctx, "ctr", ctr(args...)...)
	if err != nil {
		return r, fmt.Errorf("ctr run: %v\nstdout %q\nstderr %s%s", err, stdout, strings.TrimSpace(stderr), d.keepLog(b.cfg.logDir, t.Name()))
	}
	if want := b.images.expect[w.name]; stdout != want {
		return r, fmt.Errorf("%s printed %q, want %q (stderr %s)%s", w.name, stdout, want, strings.TrimSpace(stderr), d.keepLog(b.cfg.logDir, t.Name()))
	}
	st := b.wan.Stats()
	r.Pull, r.FirstOutput, r.Total = pullTime.Seconds(), (pullTime + first).Seconds(), (pullTime + runTime).Seconds()
	r.Bytes, r.Requests = st.ResponseBytes, st.Requests
	if m.kind == "lazysnap" {
		layers, err := b.lazysnapLayers(ctx, d)
		if err != nil {
			t.Logf("lazysnap status: %v", err)
		}
		r.Layers = layers
		for _, l := range layers {
			t.Logf("layer %s", layerLine(l))
		}
		if bad := notSoci(layers); m.soci == sociLearned && bad != "" {
			return r, fmt.Errorf("not every layer of %s mounted through the learned SOCI index (status error %v): %s%s", ref, err, bad, d.keepLog(b.cfg.logDir, t.Name()))
		}
		if m.learned && !slices.ContainsFunc(layers, func(l map[string]any) bool {
			s, _ := l["profile"].(string)
			return strings.HasSuffix(s, "from registry")
		}) {
			var states []string
			for _, l := range layers {
				states = append(states, fmt.Sprintf("%q", l["profile"]))
			}
			return r, fmt.Errorf("no layer of %s prefetched the learned profile from the registry (profile states %s; status error %v)%s",
				ref, strings.Join(states, ", "), err, d.keepLog(b.cfg.logDir, t.Name()))
		}
	}
	// The clients have their last bytes a moment before the proxy is done
	// with them; let it finish its log entries (a request still hanging
	// after this is logged as in flight). With background fetch on, the
	// snapshotter goes on fetching after the container's exit: the
	// requests that arrived after it are left out of the log's summary.
	idle := 5 * time.Second
	if m.kind != "overlayfs" && !m.noBackground {
		idle = time.Second
	}
	idleCtx, idleCancel := context.WithTimeout(ctx, idle)
	_ = b.wan.WaitIdle(idleCtx)
	idleCancel()
	entries := b.wan.Log()
	exit := pullTime + runTime
	entries = slices.DeleteFunc(entries, func(e registry.WANRequest) bool { return e.At > exit })
	r.Kinds, r.SerialReqs = summarize(entries), serialRequests(entries)
	if b.cfg.logDir != "" {
		os.MkdirAll(b.cfg.logDir, 0o755)
		if err := writeLog(filepath.Join(b.cfg.logDir, strings.ReplaceAll(t.Name(), "/", "_")+".log"), entries); err != nil {
			t.Error(err)
		}
	}
	if d != nil {
		r.PeakRSS, r.PeakOf = vmHWM(d.cmd.Process.Pid), snapshotter
	} else if pid := pidWithArg(filepath.Join(ctrd.Dir(), "config.toml")); pid > 0 {
		r.PeakRSS, r.PeakOf = vmHWM(pid), "containerd"
	}
	return r, nil
}

// timedRun runs a command and returns when its first byte of output came
// and when it exited, both from its start, and its output.
func timedRun(ctx context.Context, name string, args ...string) (first, total time.Duration, stdout, stderr string, err error) {
	cmd := exec.CommandContext(ctx, name, args...)
	pr, err := cmd.StdoutPipe()
	if err != nil {
		return 0, 0, "", "", err
	}
	var errBuf, outBuf bytes.Buffer
	cmd.Stderr = &errBuf
	start := time.Now()
	if err := cmd.Start(); err != nil {
		return 0, 0, "", "", err
	}
	buf := make([]byte, 32<<10)
	for {
		n, rerr := pr.Read(buf)
		if n > 0 {
			if first == 0 {
				first = time.Since(start)
			}
			outBuf.Write(buf[:n])
		}
		if rerr != nil {
			break
		}
	}
	err = cmd.Wait()
	return first, time.Since(start), outBuf.String(), errBuf.String(), err
}

// daemon is a snapshotter process with its own short directory (the unix
// socket path must stay under 108 bytes).
type daemon struct {
	cmd    *exec.Cmd
	exited chan struct{} // closed once cmd is reaped
	dir    string
	sock   string
	log    string
	once   sync.Once
}

// startLazysnap starts lazysnap serve in m's configuration, with extra
// appended to its config file.
func (b *bench) startLazysnap(t *testing.T, m mode, extra string) *daemon {
	t.Helper()
	dir := b.shortDir(t, "lzb-")
	// the layers are served in serve's own process, so that the peak RSS
	// measured is all of lazysnap's and nothing outlives a run (a fuse
	// manager costs one local HTTP call per layer mount)
	// every other setting is lazysnap's default
	cfg := fmt.Sprintf("root = %q\naddress = %q\n[fuse_manager]\n  enable = false\n[registry]\n  hosts_dir = %q\n",
		filepath.Join(dir, "root"), filepath.Join(dir, "lazysnap.sock"), b.hosts)
	if m.noBackground || m.fetch != "" {
		cfg += "[fetch]\n"
	}
	if m.noBackground {
		cfg += "  no_background = true\n"
	}
	if m.fetch != "" {
		cfg += "  " + m.fetch + "\n"
	}
	cfg += extra
	cfgPath := filepath.Join(dir, "lazysnap.toml")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	return startDaemon(t, dir, filepath.Join(dir, "lazysnap.sock"), b.binFor(m), "serve", "--config", cfgPath)
}

// lazysnapLayers is the per-layer status of the lazysnap serve d, from
// `lazysnap status --json` (as a user would read it), every field kept.
func (b *bench) lazysnapLayers(ctx context.Context, d *daemon) ([]map[string]any, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, b.bin, "status", "--address", filepath.Join(d.dir, "status.sock"), "--json").Output()
	if err != nil {
		return nil, err
	}
	var rep struct {
		Images []struct {
			Layers []map[string]any `json:"layers"`
		} `json:"images"`
	}
	if err := json.Unmarshal(out, &rep); err != nil {
		return nil, err
	}
	var layers []map[string]any
	for _, img := range rep.Images {
		for _, l := range img.Layers {
			delete(l, "mountpoint")
			layers = append(layers, l)
		}
	}
	return layers, nil
}

// layerLine is one layer's status on a line: its digest (short), state,
// fetched bytes and requests, then every other field that is set, e.g.
// "sha256:1a2b3c4d5e6f background, 12.3 MB in 40 requests; chunks 1200, chunks_present 310, reads 890".
func layerLine(l map[string]any) string {
	num := func(k string) float64 { f, _ := l[k].(float64); return f }
	dg, _ := l["digest"].(string)
	if len(dg) > 19 {
		dg = dg[:19]
	}
	line := fmt.Sprintf("%s %v, %.1f MB in %.0f requests", dg, l["state"], num("fetched_bytes")/1e6, num("requests"))
	var keys []string
	for k, v := range l {
		switch k {
		case "digest", "state", "fetched_bytes", "requests":
			continue
		}
		if v == nil || v == false || v == 0.0 || v == "" {
			continue
		}
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var parts []string
	for _, k := range keys {
		switch v := l[k].(type) {
		case bool:
			parts = append(parts, k)
		case float64:
			parts = append(parts, fmt.Sprintf("%s %s", k, strconv.FormatFloat(v, 'f', -1, 64)))
		default:
			parts = append(parts, fmt.Sprintf("%s %v", k, v))
		}
	}
	if len(parts) > 0 {
		line += "; " + strings.Join(parts, ", ")
	}
	return line
}

func (b *bench) startPeer(t *testing.T, m mode) *daemon {
	t.Helper()
	dir := b.shortDir(t, "lzp-")
	vars := strings.NewReplacer(
		"{{address}}", filepath.Join(dir, "peer.sock"),
		"{{root}}", filepath.Join(dir, "root"),
		"{{config}}", filepath.Join(dir, "peer.toml"),
		"{{registry}}", b.reg.Host,
		"{{mirror}}", b.wan.Host,
		"{{mirror_url}}", b.wan.URL,
		"{{hosts_dir}}", b.hosts,
		"{{no_background}}", strconv.FormatBool(m.noBackground),
	)
	if err := os.WriteFile(filepath.Join(dir, "peer.toml"), []byte(vars.Replace(b.cfg.peer.configTemplate)), 0o644); err != nil {
		t.Fatal(err)
	}
	return startDaemon(t, dir, filepath.Join(dir, "peer.sock"), b.cfg.peer.bin, strings.Fields(vars.Replace(b.cfg.peer.args))...)
}

// shortDir makes a directory for a daemon of a run in the runs'
// filesystem (b.dir), short enough for its sockets.
func (b *bench) shortDir(t *testing.T, prefix string) string {
	t.Helper()
	dir, err := os.MkdirTemp(b.dir, prefix)
	if err != nil {
		t.Fatal(err)
	}
	return dir
}

// startDaemon starts bin and waits for its socket. The caller registers
// d.stop as a cleanup.
func startDaemon(t *testing.T, dir, sock, bin string, args ...string) *daemon {
	t.Helper()
	d := &daemon{dir: dir, sock: sock, log: filepath.Join(dir, "daemon.log"), exited: make(chan struct{})}
	logf, err := os.Create(d.log)
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close()
	d.cmd = exec.Command(bin, args...)
	d.cmd.Stdout, d.cmd.Stderr = logf, logf
	d.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := d.cmd.Start(); err != nil {
		os.RemoveAll(dir)
		t.Fatalf("%s: %v", bin, err)
	}
	go func() { d.cmd.Wait(); close(d.exited) }()
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if _, err := os.Stat(sock); err == nil {
			break
		}
		select {
		case <-d.exited:
			tail := d.logTail() // before stop removes the log
			d.stop()
			t.Fatalf("%s exited during start-up%s", bin, tail)
		default:
		}
		if time.Now().After(deadline) {
			tail := d.logTail()
			d.stop()
			t.Fatalf("%s did not create %s in 30s%s", bin, sock, tail)
		}
	}
	return d
}

// stop stops the daemon (SIGTERM, SIGKILL after 15s), detaches whatever it
// left mounted and removes its directory.
func (d *daemon) stop() {
	d.once.Do(func() {
		d.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-d.exited:
		case <-time.After(15 * time.Second):
			d.cmd.Process.Kill()
			<-d.exited
		}
		unmountUnder(d.dir)
		os.RemoveAll(d.dir)
	})
}

// logTail is the end of the daemon's log, for failure messages.
func (d *daemon) logTail() string {
	if d == nil {
		return ""
	}
	b, _ := os.ReadFile(d.log)
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > 30 {
		lines = lines[len(lines)-30:]
	}
	return "\nsnapshotter log (end):\n" + strings.Join(lines, "\n")
}

// keepLog copies the daemon's log into dir (if set) and returns its end,
// for a failure message.
func (d *daemon) keepLog(dir, name string) string {
	if d == nil {
		return ""
	}
	if dir != "" {
		if b, err := os.ReadFile(d.log); err == nil && os.MkdirAll(dir, 0o755) == nil {
			os.WriteFile(filepath.Join(dir, strings.ReplaceAll(name, "/", "_")+".snapshotter.log"), b, 0o644)
		}
	}
	return d.logTail()
}

// unmountUnder detaches every mount at or below dir, deepest first.
func unmountUnder(dir string) {
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return
	}
	var points []string
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) > 4 && (f[4] == dir || strings.HasPrefix(f[4], dir+"/")) {
			points = append(points, f[4])
		}
	}
	sort.Slice(points, func(i, j int) bool { return len(points[i]) > len(points[j]) })
	for _, p := range points {
		syscall.Unmount(p, syscall.MNT_DETACH)
	}
}

// vmHWM is a process's peak resident set size in bytes (0 if unknown).
func vmHWM(pid int) int64 {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "VmHWM:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			return kb << 10
		}
	}
	return 0
}

// pidWithArg finds the process one of whose arguments is arg.
func pidWithArg(arg string) int {
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
		if err == nil && bytes.Contains(append(b, 0), []byte("\x00"+arg+"\x00")) {
			return pid
		}
	}
	return 0
}
