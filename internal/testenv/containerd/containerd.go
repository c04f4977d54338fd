// Package containerd runs a private containerd daemon for integration tests
// and builds OCI image archives that `ctr images import` accepts.
//
// Start writes a config.toml with its own root, state and sockets in a fresh
// directory under /tmp (or Options.Dir), starts /usr/bin/containerd on it, and stops it and
// cleans up after the test. Ctr and CtrRemote run the Debian ctr and
// ctr-remote (stargz-snapshotter) clients against that daemon. Nothing here
// touches the host's own containerd.
//
// Ctr captures the output of a container it runs in the foreground (`ctr
// run`, `ctr tasks exec`) through a file on a bind mount rather than ctr's
// stdio, which loses the output of commands that exit quickly (capture.go
// says why and how); the command must be an absolute path. Ctr is safe for
// concurrent use.
//
// Options.BinDir runs another containerd build instead, such as a
// containerd 2.x that scripts/containerd2.sh builds into the directory
// Containerd2Dir returns; the config is written in the version the daemon
// reads (2 for containerd 1.x, 3 for 2.x).
//
// The daemon needs root and the binaries installed; when they are missing the
// test is skipped, or fails if LAZYSNAP_REQUIRE_INTEGRATION=1 (for CI jobs
// where skipping would hide a broken environment). It is for tests only.
package containerd

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/lazysnap/lazysnap/internal/testenv"
	"golang.org/x/sys/unix"
)

// namespacePrefix begins the containerd namespace of each daemon (see
// Containerd.Namespace).
const namespacePrefix = "lazysnap-test-"

// Containerd2Env names the environment variable holding the directory of a
// containerd 2.x build (containerd, ctr, containerd-shim-runc-v2); see
// Containerd2Dir.
const Containerd2Env = "LAZYSNAP_CONTAINERD2_DIR"

// BinDirEnv names an environment variable that, when set, is the default
// for Options.BinDir of every Start that names no binaries itself. A test
// can so run helpers that start containerd with fixed options against
// another build (t.Setenv(BinDirEnv, Containerd2Dir(t))), and a whole run
// can use containerd 2.x: LAZYSNAP_TESTENV_CONTAINERD_DIR=DIR go test ./...
const BinDirEnv = "LAZYSNAP_TESTENV_CONTAINERD_DIR"

// Default binary paths, used when Options leaves them empty.
const (
	DefaultContainerd = "/usr/bin/containerd"
	DefaultCtr        = "ctr"
	DefaultCtrRemote  = "ctr-remote"
)

// Options configures Start. The zero value is usable.
type Options struct {
	// ExtraConfig is TOML appended verbatim to the generated config.toml,
	// for example a proxy_plugins section for a snapshotter under test.
	ExtraConfig string
	// DisabledPlugins are disabled in addition to CRI and the other
	// plugins Start always disables.
	DisabledPlugins []string
	// CRI keeps containerd's CRI plugins (io.containerd.grpc.v1.cri, served
	// on Address(), and 2.x's images, runtime and podsandbox plugins),
	// which Start otherwise disables; their configuration goes in
	// ExtraConfig.
	CRI bool
	// NeedCtrRemote makes Start skip (or fail) when ctr-remote is missing,
	// before any daemon is started.
	NeedCtrRemote bool
	// LogLevel is containerd's log level; "info" if empty.
	LogLevel string
	// StartTimeout bounds how long Start waits for the socket; 30s if zero.
	StartTimeout time.Duration
	// CommandTimeout bounds each Ctr and CtrRemote run; 2m if zero.
	CommandTimeout time.Duration
	// Containerd, Ctr and CtrRemote override the binaries (DefaultContainerd,
	// DefaultCtr, DefaultCtrRemote; bare names are looked up in PATH).
	Containerd, Ctr, CtrRemote string
	// BinDir, if set, is a directory holding containerd, ctr and
	// containerd-shim-runc-v2 of another containerd build (Containerd2Dir);
	// BinDirEnv sets a default.
	// Its containerd and ctr are used instead of Containerd and Ctr, and the
	// directory comes first in the daemon's PATH so that it runs its own shim.
	BinDir string
	// Dir is the directory in which the daemon's own directory (root,
	// state, sockets) is made; /tmp if empty. Its path must be short: the
	// sockets' paths are limited to 108 bytes.
	Dir string
}

// Containerd is a running private daemon. Its methods are safe to call from
// the test goroutine; the daemon is stopped by t.Cleanup.
type Containerd struct {
	dir        string
	configPath string
	logPath    string
	address    string
	namespace  string // see Namespace
	ctr        string
	ctrRemote  string
	major      int // containerd's major version
	cmdTimeout time.Duration
	cmd        *exec.Cmd
	exited     chan struct{} // closed when cmd.Wait returns
	waitErr    error         // cmd.Wait's result, valid once exited is closed
	capture    *capture      // see capture.go
	// ctrOutput, if set, wraps the writer of ctr's output (tests of
	// this package: a slow reader)
	ctrOutput func(io.Writer) io.Writer
}

// alwaysDisabled returns the plugins a test daemon never needs: CRI wants
// a CNI setup and its own state, the others want kernel features or hardware
// and only add noise to the log. Unknown IDs are ignored by containerd.
func alwaysDisabled(major int) []string {
	ids := []string{
		"io.containerd.grpc.v1.cri",
		"io.containerd.internal.v1.opt", // would write /opt/containerd
		"io.containerd.internal.v1.tracing",
		"io.containerd.tracing.processor.v1.otlp",
		"io.containerd.snapshotter.v1.aufs",
		"io.containerd.snapshotter.v1.btrfs",
		"io.containerd.snapshotter.v1.devmapper",
		"io.containerd.snapshotter.v1.zfs",
	}
	if major >= 2 {
		// containerd 2.x splits CRI into several plugins, and its NRI (on
		// by default) would serve a socket under /var/run/nri
		ids = append(ids,
			"io.containerd.cri.v1.images",
			"io.containerd.cri.v1.runtime",
			"io.containerd.nri.v1.nri",
			"io.containerd.podsandbox.controller.v1.podsandbox",
			"io.containerd.snapshotter.v1.blockfile",
			"io.containerd.snapshotter.v1.erofs",
			"io.containerd.differ.v1.erofs",
		)
	}
	return ids
}

// lookBinary resolves name like exec.LookPath, or skips t.
func lookBinary(t testing.TB, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		testenv.Unavailable(t, "%s not found: %v", name, err)
	}
	return p
}

// Start runs a private containerd for the duration of the test. It skips the
// test (see testenv.Unavailable) when not root or when a binary is missing.
func Start(t testing.TB, opts Options) *Containerd {
	t.Helper()
	if os.Geteuid() != 0 {
		testenv.Unavailable(t, "containerd needs root (euid %d)", os.Geteuid())
	}
	c := &Containerd{cmdTimeout: opts.CommandTimeout, exited: make(chan struct{})}
	if c.cmdTimeout == 0 {
		c.cmdTimeout = 2 * time.Minute
	}
	if opts.BinDir == "" && opts.Containerd == "" && opts.Ctr == "" {
		opts.BinDir = os.Getenv(BinDirEnv)
	}
	bin, ctr := orDefault(opts.Containerd, DefaultContainerd), orDefault(opts.Ctr, DefaultCtr)
	if opts.BinDir != "" {
		bin, ctr = filepath.Join(opts.BinDir, "containerd"), filepath.Join(opts.BinDir, "ctr")
	}
	bin = lookBinary(t, bin)
	c.ctr = lookBinary(t, ctr)
	var err error
	if c.major, err = majorVersion(bin); err != nil {
		t.Fatal(err)
	}
	c.ctrRemote = orDefault(opts.CtrRemote, DefaultCtrRemote)
	if opts.NeedCtrRemote {
		c.ctrRemote = lookBinary(t, c.ctrRemote)
	}

	// t.TempDir is too deep for a unix socket (108 bytes) when test names
	// are long; a short directory directly under /tmp is always fine.
	dir, err := os.MkdirTemp(orDefault(opts.Dir, "/tmp"), "lsctrd-")
	if err != nil {
		t.Fatal(err)
	}
	c.dir = dir
	if c.capture, err = newCapture(); err != nil {
		os.RemoveAll(dir)
		t.Fatal(err)
	}
	c.namespace = namespacePrefix + filepath.Base(dir)
	c.configPath = filepath.Join(dir, "config.toml")
	c.logPath = filepath.Join(dir, "containerd.log")
	c.address = filepath.Join(dir, "c.sock")
	// Registered first so it runs last, after the daemon is stopped.
	t.Cleanup(func() {
		c.unmountAll(t)
		for _, d := range []string{dir, c.capture.dir} {
			if err := os.RemoveAll(d); err != nil {
				t.Logf("containerd testenv: removing %s: %v", d, err)
			}
		}
	})

	if err := os.WriteFile(c.configPath, []byte(c.config(opts)), 0o600); err != nil {
		t.Fatal(err)
	}
	logf, err := os.Create(c.logPath)
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close() // the child holds its own descriptor
	c.cmd = exec.Command(bin, "--config", c.configPath)
	c.cmd.Stdout, c.cmd.Stderr = logf, logf
	if opts.BinDir != "" {
		// the shim is looked up in PATH
		c.cmd.Env = append(os.Environ(), "PATH="+opts.BinDir+string(os.PathListSeparator)+os.Getenv("PATH"))
	}
	// Own process group: a ^C to the test does not hit the daemon first,
	// and Cleanup signals exactly this pid.
	c.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := c.cmd.Start(); err != nil {
		t.Fatalf("starting containerd: %v", err)
	}
	go func() { c.waitErr = c.cmd.Wait(); close(c.exited) }()
	t.Cleanup(func() { c.stop(t) })

	timeout := opts.StartTimeout
	if timeout == 0 {
		timeout = 30 * time.Second
	}
	if err := c.waitReady(timeout); err != nil {
		t.Fatalf("containerd did not come up: %v\n%s", err, c.logTail(40))
	}
	return c
}

// Containerd2Dir returns the directory that Containerd2Env names, for
// Options.BinDir, after checking that it holds containerd 2.x. Otherwise it
// skips t, even when testenv.RequireEnv is set: CI does not build containerd 2.x.
func Containerd2Dir(t testing.TB) string {
	t.Helper()
	dir := os.Getenv(Containerd2Env)
	if dir == "" {
		t.Skipf("containerd 2.x test skipped: %s is not set (scripts/containerd2.sh builds the binaries)", Containerd2Env)
	}
	for _, name := range []string{"containerd", "ctr", "containerd-shim-runc-v2"} {
		if _, err := exec.LookPath(filepath.Join(dir, name)); err != nil {
			t.Skipf("containerd 2.x test skipped: %s=%s: %v", Containerd2Env, dir, err)
		}
	}
	if major, err := majorVersion(filepath.Join(dir, "containerd")); err != nil || major < 2 {
		t.Skipf("containerd 2.x test skipped: %s=%s holds containerd major version %d (%v)", Containerd2Env, dir, major, err)
	}
	return dir
}

// majorVersion runs `containerd --version` and returns the major version
// it prints: "containerd github.com/containerd/containerd/v2 2.1.4 ..." or
// "containerd github.com/containerd/containerd 1.6.20~ds1 ...".
func majorVersion(bin string) (int, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, bin, "--version").Output()
	if err != nil {
		return 0, fmt.Errorf("%s --version: %w", bin, err)
	}
	return parseMajorVersion(string(out))
}

func parseMajorVersion(out string) (int, error) {
	f := strings.Fields(out)
	if len(f) < 3 {
		return 0, fmt.Errorf("unexpected containerd --version output %q", out)
	}
	major, _, _ := strings.Cut(strings.TrimPrefix(f[2], "v"), ".")
	n, err := strconv.Atoi(major)
	if err != nil {
		return 0, fmt.Errorf("unexpected containerd --version output %q: %w", out, err)
	}
	return n, nil
}

// configVersion is the config.toml version the daemon of a major version
// reads natively: 2 for 1.x, 3 for 2.x (which would migrate 2 on every start).
func configVersion(major int) int {
	if major >= 2 {
		return 3
	}
	return 2
}

// Major is the daemon's major version (1 or 2).
func (c *Containerd) Major() int { return c.major }

func orDefault(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

// config returns the config.toml text.
func (c *Containerd) config(opts Options) string {
	cri := map[string]bool{ // the CRI plugins of 1.x and 2.x
		"io.containerd.grpc.v1.cri": true, "io.containerd.cri.v1.images": true, "io.containerd.cri.v1.runtime": true,
		"io.containerd.podsandbox.controller.v1.podsandbox": true,
	}
	var disabled []string
	for _, p := range append(alwaysDisabled(c.major), opts.DisabledPlugins...) {
		if !opts.CRI || !cri[p] {
			disabled = append(disabled, p)
		}
	}
	quoted := make([]string, len(disabled))
	for i, p := range disabled {
		quoted[i] = strconv.Quote(p)
	}
	var b strings.Builder
	fmt.Fprintf(&b, "version = %d\n", configVersion(c.major))
	fmt.Fprintf(&b, "root = %q\n", filepath.Join(c.dir, "root"))
	fmt.Fprintf(&b, "state = %q\n", filepath.Join(c.dir, "state"))
	fmt.Fprintf(&b, "disabled_plugins = [%s]\n\n", strings.Join(quoted, ", "))
	fmt.Fprintf(&b, "[grpc]\n  address = %q\n\n", c.address)
	fmt.Fprintf(&b, "[ttrpc]\n  address = %q\n\n", c.address+".ttrpc")
	fmt.Fprintf(&b, "[debug]\n  level = %q\n", orDefault(opts.LogLevel, "info"))
	if opts.ExtraConfig != "" {
		fmt.Fprintf(&b, "\n%s\n", opts.ExtraConfig)
	}
	return b.String()
}

// waitReady polls `ctr version` until the daemon answers, exits or the
// timeout passes.
func (c *Containerd) waitReady(timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	var last []byte
	for {
		select {
		case <-c.exited:
			return fmt.Errorf("containerd exited: %v", c.waitErr)
		default:
		}
		if _, err := os.Stat(c.address); err == nil {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			out, err := exec.CommandContext(ctx, c.ctr, "--address", c.address, "version").CombinedOutput()
			cancel()
			if err == nil {
				return nil
			}
			last = out
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("no answer on %s after %v; last ctr output: %s", c.address, timeout, bytes.TrimSpace(last))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// stop sends SIGTERM to the daemon and SIGKILL if it has not exited after
// ten seconds.
func (c *Containerd) stop(t testing.TB) {
	select {
	case <-c.exited:
		t.Logf("containerd had already exited: %v\n%s", c.waitErr, c.logTail(20))
		return
	default:
	}
	_ = c.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-c.exited:
	case <-time.After(10 * time.Second):
		t.Logf("containerd ignored SIGTERM for 10s; killing pid %d", c.cmd.Process.Pid)
		_ = c.cmd.Process.Kill()
		<-c.exited
	}
	if t.Failed() {
		t.Logf("containerd log (%s), last lines:\n%s", c.logPath, c.logTail(40))
	}
}

// unmountAll detaches every mount at or below the daemon's directory,
// deepest first: snapshots a test left mounted, or the daemon's own
// bind mounts.
func (c *Containerd) unmountAll(t testing.TB) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		t.Logf("containerd testenv: %v", err)
		return
	}
	defer f.Close()
	var points []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 5 {
			continue
		}
		mp := unescapeMountinfo(fields[4])
		if mp == c.dir || strings.HasPrefix(mp, c.dir+"/") {
			points = append(points, mp)
		}
	}
	sort.Slice(points, func(i, j int) bool { return len(points[i]) > len(points[j]) })
	for _, mp := range points {
		if err := unix.Unmount(mp, unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
			t.Logf("containerd testenv: unmount %s: %v", mp, err)
		}
	}
}

// unescapeMountinfo undoes the octal escapes (\040 etc.) of mountinfo.
func unescapeMountinfo(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if n, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(n))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// logTail returns up to n last lines of the daemon's log.
func (c *Containerd) logTail(n int) string {
	b, err := os.ReadFile(c.logPath)
	if err != nil {
		return err.Error()
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// Address is the daemon's gRPC socket path.
func (c *Containerd) Address() string { return c.address }

// LogPath is the daemon's log file (removed with the rest after the test).
func (c *Containerd) LogPath() string { return c.logPath }

// Dir is the daemon's private directory; tests may put scratch files there
// (image archives, exports) to have them cleaned up with the daemon.
func (c *Containerd) Dir() string { return c.dir }

// Namespace is the containerd namespace Ctr and CtrRemote work in, one
// of this daemon's own: runc keeps a container's state under
// /run/containerd/runc/<namespace>/<id> and its cgroup at
// /<namespace>/<id>, whichever containerd started it, so two test daemons
// running containers of the same id in one namespace (other packages',
// another checkout's) would share, and kill, each other's.
func (c *Containerd) Namespace() string { return c.namespace }

// Ctr runs `ctr --address ADDR --namespace NAMESPACE args...` and
// returns its combined output. Of `ctr run` and `ctr tasks exec` in the
// foreground, it returns the command's combined output, captured through
// a file, then ctr's own: ctr loses output of commands that exit quickly
// (see capture.go). The command must then be an absolute path; the
// container gets two bind mounts under /dev.
func (c *Containerd) Ctr(t testing.TB, args ...string) ([]byte, error) {
	t.Helper()
	return c.ctrCaptured(t, args)
}

// CtrRemote runs ctr-remote like Ctr. It skips the test (see testenv.Unavailable)
// when ctr-remote is missing.
func (c *Containerd) CtrRemote(t testing.TB, args ...string) ([]byte, error) {
	t.Helper()
	return c.run(t, lookBinary(t, c.ctrRemote), args)
}

func (c *Containerd) run(t testing.TB, bin string, args []string) ([]byte, error) {
	t.Helper()
	full := append([]string{"--address", c.address, "--namespace", c.namespace}, args...)
	t.Logf("$ %s %s", filepath.Base(bin), strings.Join(args, " "))
	ctx, cancel := context.WithTimeout(context.Background(), c.cmdTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, full...)
	// ctr 2.x warns of every deprecation the daemon reports (cgroup v1
	// here) on each run, into the output tests compare
	cmd.Env = append(os.Environ(), "CONTAINERD_SUPPRESS_DEPRECATION_WARNINGS=1")
	var buf bytes.Buffer
	var w io.Writer = &buf
	if c.ctrOutput != nil {
		w = c.ctrOutput(w)
	}
	cmd.Stdout, cmd.Stderr = w, w
	err := cmd.Run()
	out := buf.Bytes()
	if ctx.Err() != nil {
		err = fmt.Errorf("%s %s: timed out after %v: %w", filepath.Base(bin), strings.Join(args, " "), c.cmdTimeout, err)
	} else if err != nil {
		err = fmt.Errorf("%s %s: %w", filepath.Base(bin), strings.Join(args, " "), err)
	}
	return out, err
}
