package main

// End-to-end tests with the real components: the CNCF registry, containerd,
// runc, FUSE and the lazysnap binary as containerd's proxy snapshotter.

import (
	"archive/tar"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/lazysnap/lazysnap/convert"
	"github.com/lazysnap/lazysnap/fusemanager"
	"github.com/lazysnap/lazysnap/internal/testenv"
	ctrdenv "github.com/lazysnap/lazysnap/internal/testenv/containerd"
	"github.com/lazysnap/lazysnap/internal/testenv/registry"
	"github.com/lazysnap/lazysnap/internal/testenv/systemd"
	"github.com/lazysnap/lazysnap/internal/testimage"
	"github.com/lazysnap/lazysnap/ops"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// busyboxLayers returns two layers: a static busybox with a few applets,
// and data files (a small one and large incompressible ones). A variant
// adds a file to each layer so that images of different variants share no
// layer (containerd reuses snapshots of identical layers).
func busyboxLayers(t *testing.T, variant ...string) [][]byte {
	t.Helper()
	bb, err := os.ReadFile("/bin/busybox")
	if err != nil {
		testenv.Unavailable(t, "static busybox (Debian busybox-static): %v", err)
	}
	var l1, l2 bytes.Buffer
	tw := tar.NewWriter(&l1)
	mt := time.Unix(1700000000, 0)
	tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: "bin/", Mode: 0o755, ModTime: mt})
	tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: "bin/busybox", Mode: 0o755, Size: int64(len(bb)), ModTime: mt})
	tw.Write(bb)
	for _, applet := range []string{"sh", "cat", "sha256sum", "sleep", "ls", "wc", "head"} {
		tw.WriteHeader(&tar.Header{Typeflag: tar.TypeSymlink, Name: "bin/" + applet, Linkname: "busybox", Mode: 0o777, ModTime: mt})
	}
	addVariant := func(tw *tar.Writer, name string) {
		if len(variant) > 0 {
			tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: 0o644, Size: int64(len(variant[0])), ModTime: mt})
			tw.Write([]byte(variant[0]))
		}
	}
	addVariant(tw, "bin/.variant")
	tw.Close()
	big := make([]byte, 24<<20)
	rng := rand.New(rand.NewPCG(7, 7))
	for i := range big {
		big[i] = byte(rng.Uint32())
	}
	tw = tar.NewWriter(&l2)
	tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: "data/", Mode: 0o755, ModTime: mt})
	small := []byte("hello from a lazy layer\n")
	tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: "data/small", Mode: 0o644, Size: int64(len(small)), ModTime: mt})
	tw.Write(small)
	tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: "data/big", Mode: 0o644, Size: int64(len(big)), ModTime: mt})
	tw.Write(big)
	other := big[:4<<20]
	for i := range other {
		other[i] ^= 0x5a
	}
	tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: "data/other", Mode: 0o644, Size: int64(len(other)), ModTime: mt})
	tw.Write(other)
	addVariant(tw, "data/variant")
	tw.Close()
	return [][]byte{l1.Bytes(), l2.Bytes()}
}

var buildOnce struct {
	sync.Once
	path string
	err  error
}

// TestMain runs the tests, then fails the run if any process of the
// lazysnap binary the tests built, or of this test binary, is still
// running (a test that leaves one is a defect; they are killed), and
// removes the binary. Started with a lazysnap command as its first
// argument, the test binary is lazysnap: a fuse manager the tests run in
// this process starts its fd keeper with os.Executable.
func TestMain(m *testing.M) {
	if len(os.Args) > 1 && !strings.HasPrefix(os.Args[1], "-") {
		os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
	}
	code := m.Run()
	self, _ := os.Executable()
	exes := []string{self}
	if buildOnce.path != "" {
		exes = append(exes, buildOnce.path)
	}
	if left := leftProcesses(exes, 10*time.Second); len(left) > 0 {
		fmt.Fprintf(os.Stderr, "FAIL: the tests left %d lazysnap processes running (killed now):\n", len(left))
		for pid, cmdline := range left {
			fmt.Fprintf(os.Stderr, "  %d %s\n", pid, cmdline)
			syscall.Kill(pid, syscall.SIGKILL)
		}
		code = 1
	}
	if buildOnce.path != "" {
		os.RemoveAll(filepath.Dir(buildOnce.path))
	}
	os.Exit(code)
}

// leftProcesses returns the live processes (but this one) running one of
// exes (or a binary since replaced at that path), by pid with their
// command lines, after giving them up to grace to exit: a keeper exits
// within seconds of its manager.
func leftProcesses(exes []string, grace time.Duration) map[int]string {
	deadline := time.Now().Add(grace)
	for {
		left := map[int]string{}
		dirs, _ := filepath.Glob("/proc/[0-9]*")
		for _, d := range dirs {
			pid, _ := strconv.Atoi(filepath.Base(d))
			exe, err := os.Readlink(filepath.Join(d, "exe"))
			if err != nil || pid == os.Getpid() || !alive(pid) {
				continue
			}
			for _, e := range exes {
				if exe == e || exe == e+" (deleted)" {
					b, _ := os.ReadFile(filepath.Join(d, "cmdline"))
					left[pid] = strings.ReplaceAll(string(bytes.TrimRight(b, "\x00")), "\x00", " ")
				}
			}
		}
		if len(left) == 0 || time.Now().After(deadline) {
			return left
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// lazysnapBinary builds the lazysnap binary once per test run.
func lazysnapBinary(t *testing.T) string {
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "lazysnap-bin-")
		if err != nil {
			buildOnce.err = err
			return
		}
		buildOnce.path = filepath.Join(dir, "lazysnap")
		out, err := exec.Command("go", "build", "-o", buildOnce.path, ".").CombinedOutput()
		if err != nil {
			buildOnce.err = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if buildOnce.err != nil {
		t.Fatal(buildOnce.err)
	}
	return buildOnce.path
}

// stack is a registry behind a counting proxy, containerd, and lazysnap.
type stack struct {
	reg   *registry.Registry
	wan   *registry.WANProxy
	ctrd  *ctrdenv.Containerd
	dir   string // short: holds lazysnap's socket
	hosts string
	bin   string
	cmd   *exec.Cmd
	// manager is the fuse manager's service when the stack runs it as
	// systemd does (stackOptions.systemd); serve then starts none
	manager *systemd.Service
}

func startStack(t *testing.T, extraConfig string) *stack {
	t.Helper()
	return startStackWith(t, extraConfig, stackOptions{})
}

// stackOptions vary startStack.
type stackOptions struct {
	// reg, if set, is the registry to use (another stack's: a second
	// node of the same registry, with a WAN proxy, containerd and
	// lazysnap of its own); else the stack starts one.
	reg *registry.Registry
	// cri, if set, enables containerd's CRI plugin with the configuration
	// it returns (after the stack's registry and hosts directory exist).
	cri func(s *stack) string
	// capabilities, if set, are the proxy plugin's capabilities in
	// containerd's config (remap-ids).
	capabilities []string
	// mirrors are the registry's mirrors in the stack's hosts.toml, tried
	// before the registry (through the stack's WAN proxy).
	mirrors []registry.Endpoint
	// containerd is more of containerd's config, after the proxy plugin's
	// table (its exports, say).
	containerd string
	// systemd runs the fuse manager as lazysnap-fuse-manager.service does
	// (a Type=notify service with a file descriptor store) and serve with
	// --start-fuse-manager=false.
	systemd bool
}

func startStackWith(t *testing.T, extraConfig string, opts stackOptions) *stack {
	t.Helper()
	testenv.NeedFUSE(t)
	s := &stack{bin: lazysnapBinary(t), hosts: t.TempDir(), reg: opts.reg}
	if s.reg == nil {
		s.reg = registry.Start(t, registry.Options{})
	}
	s.wan = registry.StartWANProxy(t, s.reg.URL(), registry.WANOptions{})
	if _, err := registry.WriteHostsConfig(s.hosts, s.reg.Host, registry.Endpoint{URL: s.wan.URL}, opts.mirrors...); err != nil {
		t.Fatal(err)
	}
	var err error
	if s.dir, err = os.MkdirTemp("/tmp", "lzs-"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(s.dir) })
	cfg := fmt.Sprintf("root = %q\naddress = %q\n[registry]\n  hosts_dir = %q\n%s", filepath.Join(s.dir, "root"), s.sock(), s.hosts, extraConfig)
	if err := os.WriteFile(filepath.Join(s.dir, "lazysnap.toml"), []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	if opts.systemd {
		s.manager = systemd.Start(t, s.dir, "fuse-manager", s.bin, "fuse-manager", "--config", filepath.Join(s.dir, "lazysnap.toml"))
		s.manager.Expect(t, "READY=1", time.Minute)
	}
	s.startLazysnap(t)
	plugin := fmt.Sprintf("[proxy_plugins.lazysnap]\n  type = \"snapshot\"\n  address = %q\n", s.sock())
	if len(opts.capabilities) > 0 {
		q, _ := json.Marshal(opts.capabilities) // a TOML array of strings
		plugin += fmt.Sprintf("  capabilities = %s\n", q)
	}
	plugin += opts.containerd
	copts := ctrdenv.Options{NeedCtrRemote: true, ExtraConfig: plugin}
	if opts.cri != nil {
		copts.CRI = true
		copts.ExtraConfig += opts.cri(s)
	}
	s.ctrd = ctrdenv.Start(t, copts)
	t.Cleanup(func() {
		// containers first, then lazysnap, then (by its own cleanup) containerd
		s.stopLazysnap(t)
		s.stopManager(t, syscall.SIGTERM)
		out, _ := exec.Command("sh", "-c", "grep -o '"+s.dir+"[^ ]*' /proc/mounts | sort -r").Output()
		for _, m := range strings.Fields(string(out)) {
			syscall.Unmount(m, syscall.MNT_DETACH)
		}
		// the fd keeper held the mounts for the next manager; they are
		// gone, and so is the manager
		stopKeeper(t, filepath.Join(s.dir, "root"))
	})
	return s
}

// stopKeeper stops the fd keeper of root, if one runs: SIGTERM, which
// ends a keeper that holds nothing within seconds, then SIGKILL (and a
// test failure) after 15 s.
func stopKeeper(t *testing.T, root string) {
	b, err := os.ReadFile(filepath.Join(root, fusemanager.KeeperPIDName))
	if err != nil {
		return
	}
	pid, _ := strconv.Atoi(strings.TrimSpace(string(b)))
	if pid <= 0 || !alive(pid) {
		return
	}
	syscall.Kill(pid, syscall.SIGTERM)
	for deadline := time.Now().Add(15 * time.Second); alive(pid); time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Errorf("fd keeper %d still running 15 s after SIGTERM; killing it", pid)
			syscall.Kill(pid, syscall.SIGKILL)
			return
		}
	}
}

func (s *stack) sock() string { return filepath.Join(s.dir, "lazysnap.sock") }

func (s *stack) startLazysnap(t *testing.T) {
	t.Helper()
	os.Remove(s.sock())
	s.cmd = exec.Command(s.bin, "serve", "--config", filepath.Join(s.dir, "lazysnap.toml"), fmt.Sprintf("--start-fuse-manager=%v", s.manager == nil))
	logf, err := os.OpenFile(filepath.Join(s.dir, "lazysnap.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	s.cmd.Stdout, s.cmd.Stderr = logf, logf
	if err := s.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 200; i++ {
		if _, err := os.Stat(s.sock()); err == nil {
			s.waitConnected(t)
			return
		}
		time.Sleep(25 * time.Millisecond)
	}
	t.Fatalf("lazysnap did not start:\n%s", s.log())
}

// waitConnected waits until containerd reaches lazysnap again after a
// restart: its connection to a proxy plugin retries with a backoff (up to
// a few seconds), failing calls as unavailable until then.
func (s *stack) waitConnected(t *testing.T) {
	if s.ctrd == nil {
		return // the first start: containerd is not up yet
	}
	var out []byte
	var err error
	for i := 0; i < 100; i++ {
		if out, err = s.ctrd.Ctr(t, "snapshots", "--snapshotter", "lazysnap", "ls"); err == nil {
			return
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Fatalf("containerd does not reach lazysnap after its restart: %v\n%s", err, out)
}

func (s *stack) stopLazysnap(t *testing.T) {
	if s.cmd == nil || s.cmd.Process == nil {
		return
	}
	s.cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan struct{})
	go func() { s.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(15 * time.Second):
		s.cmd.Process.Kill()
		<-done
	}
	s.cmd = nil
}

// managerPID is the pid of the stack's fuse manager, 0 if none runs.
func (s *stack) managerPID() int {
	b, err := os.ReadFile(filepath.Join(s.dir, "root", managerPIDName))
	if err != nil {
		return 0
	}
	pid, _ := strconv.Atoi(strings.TrimSpace(string(b)))
	if pid <= 0 || !alive(pid) {
		return 0
	}
	return pid
}

// alive reports whether process pid exists and is not a zombie (the
// manager's parent, serve, may be gone, and whoever inherits it may not
// reap it at once).
func alive(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	// pid (comm) state ...: comm may hold spaces; state follows the last ')'
	i := bytes.LastIndexByte(b, ')')
	return i > 0 && i+2 < len(b) && b[i+2] != 'Z'
}

// stopManager sends sig to the stack's fuse manager and waits for it to
// exit (it is not our child: poll), killing it after 15 s.
func (s *stack) stopManager(t *testing.T, sig syscall.Signal) {
	pid := s.managerPID()
	if pid == 0 {
		return
	}
	syscall.Kill(pid, sig)
	for i := 0; i < 600; i++ {
		if !alive(pid) {
			return
		}
		if i == 599 {
			t.Errorf("fuse manager %d did not exit on %v; killing it", pid, sig)
			syscall.Kill(pid, syscall.SIGKILL)
		}
		time.Sleep(25 * time.Millisecond)
	}
}

func (s *stack) log() string {
	b, _ := os.ReadFile(filepath.Join(s.dir, "lazysnap.log"))
	m, _ := os.ReadFile(filepath.Join(s.dir, "root", managerLogName))
	if s.manager != nil {
		m = []byte(s.manager.Log())
	}
	return string(b) + "\n--- fuse manager:\n" + string(m)
}

// ctr runs ctr against the stack's containerd and fails the test on error.
func (s *stack) ctr(t *testing.T, args ...string) string {
	t.Helper()
	out, err := s.ctrd.Ctr(t, args...)
	if err != nil {
		t.Fatalf("ctr %s: %v\n%s\nlazysnap log:\n%s", strings.Join(args, " "), err, out, s.log())
	}
	return string(out)
}

// pull runs `lazysnap pull [flags] ref` and returns its output.
func (s *stack) pull(t *testing.T, ref string, flags ...string) string {
	t.Helper()
	args := append([]string{"pull", "--address", s.ctrd.Address(), "--namespace", s.ctrd.Namespace(), "--hosts-dir", s.hosts}, flags...)
	cmd := exec.Command(s.bin, append(args, ref)...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("lazysnap pull: %v\n%s\nlazysnap log:\n%s", err, out, s.log())
	}
	return string(out)
}

// pushLayout pushes the image of an OCI layout directory and returns its
// reference and total blob bytes.
func (s *stack) pushLayout(t *testing.T, dir, repo, tag string) (string, int64) {
	t.Helper()
	return pushLayoutTo(t, s.reg, dir, repo, tag)
}

// pushLayoutTo pushes the image of an OCI layout directory to reg.
func pushLayoutTo(t *testing.T, reg *registry.Registry, dir, repo, tag string) (string, int64) {
	t.Helper()
	ctx := context.Background()
	p := reg.Pusher()
	var idx ocispec.Index
	readJSON(t, filepath.Join(dir, "index.json"), &idx)
	md := idx.Manifests[0]
	var m ocispec.Manifest
	readJSON(t, filepath.Join(dir, "blobs", "sha256", md.Digest.Encoded()), &m)
	var total int64
	for _, d := range append([]ocispec.Descriptor{m.Config}, m.Layers...) {
		b, err := os.ReadFile(filepath.Join(dir, "blobs", "sha256", d.Digest.Encoded()))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := p.PushBlob(ctx, repo, b); err != nil {
			t.Fatal(err)
		}
		total += d.Size
	}
	mb, err := os.ReadFile(filepath.Join(dir, "blobs", "sha256", md.Digest.Encoded()))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.PushManifest(ctx, repo, tag, md.MediaType, mb); err != nil {
		t.Fatal(err)
	}
	return reg.Ref(repo, tag), total
}

// ctrRemoteConvert imports an image of layers as name into containerd,
// has ctr-remote convert it (with flag, and --oci) and push it to dst.
func (s *stack) ctrRemoteConvert(t *testing.T, layers [][]byte, name, dst, flag string) {
	t.Helper()
	archive, err := testimage.OCIArchive(name, layers...)
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(t.TempDir(), "img.tar")
	if err := os.WriteFile(p, archive, 0o644); err != nil {
		t.Fatal(err)
	}
	s.ctr(t, "images", "import", "--no-unpack", p)
	if out, err := s.ctrd.CtrRemote(t, "images", "convert", flag, "--oci", name, dst); err != nil {
		t.Fatalf("ctr-remote convert: %v\n%s", err, out)
	}
	s.ctr(t, "images", "push", "--plain-http", dst)
	s.ctr(t, "images", "rm", dst)
}

func readJSON(t *testing.T, path string, v any) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, v); err != nil {
		t.Fatal(err)
	}
}

// buildImages builds the busybox image (of an optional variant) in OCI
// layouts: gzip (as built) and eStargz (converted by lazysnap).
func buildImages(t *testing.T, variant ...string) (gzipDir, esgzDir string) {
	t.Helper()
	return buildLayouts(t, busyboxLayers(t, variant...)...)
}

// buildLayouts builds an image of layers in OCI layouts: gzip (as built)
// and eStargz (converted by lazysnap).
func buildLayouts(t *testing.T, layers ...[]byte) (gzipDir, esgzDir string) {
	t.Helper()
	tmp := t.TempDir()
	gzipDir, esgzDir = filepath.Join(tmp, "gzip"), filepath.Join(tmp, "esgz")
	if _, err := testimage.Layout(gzipDir, "lazysnap.test/busybox:1", layers...); err != nil {
		t.Fatal(err)
	}
	if _, err := convert.Image(context.Background(), gzipDir, esgzDir, convert.Options{}); err != nil {
		t.Fatal(err)
	}
	return gzipDir, esgzDir
}

func TestEndToEnd(t *testing.T) {
	s := startStack(t, "[fetch]\n  no_background = true\n")
	gzipDir, esgzDir := buildImages(t)

	t.Run("lazy", func(t *testing.T) {
		ref, size := s.pushLayout(t, esgzDir, "busybox", "esgz")
		s.wan.Reset()
		out := s.pull(t, ref)
		if !strings.Contains(out, "2 of 2 layers lazy") {
			t.Fatalf("pull: %s\nlazysnap log:\n%s", out, s.log())
		}
		got := s.ctr(t, "run", "--rm", "--snapshotter", "lazysnap", ref, "lazy1", "/bin/sh", "-c", "cat /data/small")
		if got != "hello from a lazy layer\n" {
			t.Fatalf("container printed %q", got)
		}
		st := s.wan.Stats()
		t.Logf("lazy pull + run: %d requests, %d of %d image bytes fetched", st.Requests, st.ResponseBytes, size)
		if st.ResponseBytes*2 >= size {
			t.Errorf("fetched %d bytes of a %d-byte image, want well under half", st.ResponseBytes, size)
		}
		// every byte of the big file arrives, verified
		sum := s.ctr(t, "run", "--rm", "--snapshotter", "lazysnap", ref, "lazy2", "/bin/sh", "-c", "sha256sum /data/big | head -c 64")
		if want := sha256Of(t, busyboxLayers(t)[1], "data/big"); sum != want {
			t.Fatalf("sha256 of data/big in the container %q, want %q", sum, want)
		}
		// Usage reports the remote layers' local bytes: data/big (24 MiB) is
		// now held locally
		usage := s.ctr(t, "snapshots", "--snapshotter", "lazysnap", "usage")
		if !strings.Contains(usage, "MiB") {
			t.Errorf("snapshot usage does not show the fetched content:\n%s", usage)
		}
	})

	t.Run("fallback for a gzip image", func(t *testing.T) {
		ref, _ := s.pushLayout(t, gzipDir, "busybox", "gzip")
		out := s.pull(t, ref)
		if !strings.Contains(out, "0 of 2 layers lazy") {
			t.Fatalf("pull: %s", out)
		}
		got := s.ctr(t, "run", "--rm", "--snapshotter", "lazysnap", ref, "plain1", "/bin/sh", "-c", "cat /data/small")
		if got != "hello from a lazy layer\n" {
			t.Fatalf("container printed %q", got)
		}
		if !strings.Contains(s.log(), "missing-labels") && !strings.Contains(s.log(), "not-lazy") {
			t.Errorf("no fallback reason logged:\n%s", s.log())
		}
	})

	t.Run("image converted by ctr-remote", func(t *testing.T) {
		dst := s.reg.Ref("ctrremote", "esgz")
		s.ctrRemoteConvert(t, busyboxLayers(t), "lazysnap.test/busybox:ctr", dst, "--estargz")
		out := s.pull(t, dst)
		if !strings.Contains(out, "2 of 2 layers lazy") {
			t.Fatalf("pull: %s\nlazysnap log:\n%s", out, s.log())
		}
		got := s.ctr(t, "run", "--rm", "--snapshotter", "lazysnap", dst, "ctrremote1", "/bin/sh", "-c", "cat /data/small")
		if got != "hello from a lazy layer\n" {
			t.Fatalf("container printed %q", got)
		}
	})

	t.Run("restart restores lazy layers", func(t *testing.T) {
		ref := s.reg.Ref("busybox", "esgz")
		s.stopLazysnap(t)
		s.startLazysnap(t)
		got := s.ctr(t, "run", "--rm", "--snapshotter", "lazysnap", ref, "after-restart", "/bin/sh", "-c", "cat /data/small; ls /bin | wc -l")
		if !strings.HasPrefix(got, "hello from a lazy layer\n") {
			t.Fatalf("container printed %q\nlazysnap log:\n%s", got, s.log())
		}
	})
}

func sha256Of(t *testing.T, tarball []byte, name string) string {
	t.Helper()
	tr := tar.NewReader(bytes.NewReader(tarball))
	for {
		h, err := tr.Next()
		if err != nil {
			t.Fatalf("%s not in layer: %v", name, err)
		}
		if h.Name == name {
			f := filepath.Join(t.TempDir(), "f")
			b := new(bytes.Buffer)
			b.ReadFrom(tr)
			os.WriteFile(f, b.Bytes(), 0o644)
			out, err := exec.Command("sha256sum", f).Output()
			if err != nil {
				t.Fatal(err)
			}
			return string(out[:64])
		}
	}
}

// TestFaults runs a container over a lazy image and breaks the registry
// under it: reads of uncached data fail with EIO (never wrong bytes) and
// succeed again once the registry is back, without restarting anything.
func TestFaults(t *testing.T) {
	s := startStack(t, "[fetch]\n  no_background = true\n  timeout = \"20s\"\n")
	_, esgzDir := buildImages(t)
	ref, _ := s.pushLayout(t, esgzDir, "busybox", "faults")
	if out := s.pull(t, ref); !strings.Contains(out, "2 of 2 layers lazy") {
		t.Fatalf("pull: %s", out)
	}
	s.runSleeper(t, ref, "victim")
	want := sha256Of(t, busyboxLayers(t)[1], "data/big")
	hash := func(id string) (string, error) {
		out, err := s.ctrd.Ctr(t, "tasks", "exec", "--exec-id", id, "victim", "/bin/sh", "-c", "sha256sum /data/big | head -c 64")
		return string(out), err
	}

	t.Run("registry down", func(t *testing.T) {
		s.reg.Stop()
		if out, _ := hash("down"); !strings.Contains(out, "Input/output error") {
			t.Fatalf("read with the registry down: %q, want EIO", out)
		}
		s.reg.Restart()
		if got, err := hash("back"); err != nil || got != want {
			t.Fatalf("read after the registry came back: %v %q, want %s", err, got, want)
		}
	})

	t.Run("corrupted blob", func(t *testing.T) {
		// damage the stored data layer where data/other (its last file,
		// not read yet) lies: the registry now serves wrong bytes
		var m ocispec.Manifest
		var idx ocispec.Index
		readJSON(t, filepath.Join(esgzDir, "index.json"), &idx)
		readJSON(t, filepath.Join(esgzDir, "blobs", "sha256", idx.Manifests[0].Digest.Encoded()), &m)
		p := s.reg.BlobPath(m.Layers[1].Digest.String())
		orig, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		bad := bytes.Clone(orig)
		for i := len(bad) * 90 / 100; i < len(bad)*95/100; i += 512 {
			bad[i] ^= 0xff
		}
		if err := os.WriteFile(p, bad, 0o644); err != nil {
			t.Fatal(err)
		}
		sum := func(id string) string {
			out, _ := s.ctrd.Ctr(t, "tasks", "exec", "--exec-id", id, "victim", "/bin/sh", "-c", "sha256sum /data/other | head -c 64")
			return string(out)
		}
		want := sha256Of(t, busyboxLayers(t)[1], "data/other")
		if got := sum("corrupt"); !strings.Contains(got, "Input/output error") {
			t.Fatalf("read of corrupted data: %q, want EIO (never the wrong bytes)", got)
		}
		// damaged deflate data fails to decompress (ErrFormat) or, if it
		// does, its digest (ErrVerify): either way the read is refused
		if log := s.log(); !strings.Contains(log, "layer read failed") || !strings.Contains(log, m.Layers[1].Digest.String()) {
			t.Errorf("no read failure naming the layer was logged:\n%s", log)
		}
		// cached, verified data is unaffected
		if got, err := hash("cached"); err != nil || got != sha256Of(t, busyboxLayers(t)[1], "data/big") {
			t.Fatalf("cached file after the damage: %v %q", err, got)
		}
		os.WriteFile(p, orig, 0o644)
		if got := sum("repaired"); got != want {
			t.Fatalf("read after repair: %q, want %s", got, want)
		}
	})
}

// rewriteLayout copies an OCI layout, letting edit change the manifest
// (and add blobs) before the manifest and index are written anew.
func rewriteLayout(t *testing.T, src string, edit func(dst string, m *ocispec.Manifest, cfg *ocispec.Image)) string {
	t.Helper()
	dst := t.TempDir()
	if out, err := exec.Command("cp", "-a", src+"/.", dst).CombinedOutput(); err != nil {
		t.Fatalf("cp: %v %s", err, out)
	}
	var idx ocispec.Index
	readJSON(t, filepath.Join(dst, "index.json"), &idx)
	var m ocispec.Manifest
	readJSON(t, filepath.Join(dst, "blobs", "sha256", idx.Manifests[0].Digest.Encoded()), &m)
	var cfg ocispec.Image
	readJSON(t, filepath.Join(dst, "blobs", "sha256", m.Config.Digest.Encoded()), &cfg)
	edit(dst, &m, &cfg)
	put := func(mediaType string, v any) ocispec.Descriptor {
		b, _ := json.Marshal(v)
		d := ocispec.Descriptor{MediaType: mediaType, Digest: digestOf(b), Size: int64(len(b))}
		os.WriteFile(filepath.Join(dst, "blobs", "sha256", d.Digest.Encoded()), b, 0o644)
		return d
	}
	m.Config = put(ocispec.MediaTypeImageConfig, cfg)
	md := put(ocispec.MediaTypeImageManifest, m)
	md.Annotations = idx.Manifests[0].Annotations
	idx.Manifests = []ocispec.Descriptor{md}
	b, _ := json.Marshal(idx)
	os.WriteFile(filepath.Join(dst, "index.json"), b, 0o644)
	return dst
}

// TestBadImages pulls images whose eStargz layers must be refused: each
// falls back (the tar itself is sound) with the reason logged, to
// containerd's pull or, for a layer that is not lazy, to lazysnap's
// line-rate pull, and the daemon goes on serving lazy images.
func TestBadImages(t *testing.T) {
	s := startStack(t, "[fetch]\n  no_background = true\n")
	_, esgzDir := buildImages(t)
	goodRef, _ := s.pushLayout(t, esgzDir, "busybox", "good")
	for _, tc := range []struct {
		name   string
		edit   func(dst string, m *ocispec.Manifest, cfg *ocispec.Image)
		reason string
	}{
		{"TOC digest does not match the annotation", func(dst string, m *ocispec.Manifest, cfg *ocispec.Image) {
			for i := range m.Layers {
				m.Layers[i].Annotations["containerd.io/snapshot/stargz/toc.digest"] = digestOf([]byte("another TOC")).String()
			}
		}, "verification"},
		{"no TOC digest annotation", func(dst string, m *ocispec.Manifest, cfg *ocispec.Image) {
			for i := range m.Layers {
				delete(m.Layers[i].Annotations, "containerd.io/snapshot/stargz/toc.digest")
			}
		}, "not-lazy"},
		{"garbage TOC digest annotation", func(dst string, m *ocispec.Manifest, cfg *ocispec.Image) {
			for i := range m.Layers {
				m.Layers[i].Annotations["containerd.io/snapshot/stargz/toc.digest"] = "garbage"
			}
		}, "invalid-labels"},
		{"md5 TOC digest annotation", func(dst string, m *ocispec.Manifest, cfg *ocispec.Image) {
			for i := range m.Layers {
				m.Layers[i].Annotations["containerd.io/snapshot/stargz/toc.digest"] = "md5:d41d8cd98f00b204e9800998ecf8427e"
			}
		}, "invalid-labels"},
		{"footer pointing outside the blob", func(dst string, m *ocispec.Manifest, cfg *ocispec.Image) {
			l := &m.Layers[1]
			b, err := os.ReadFile(filepath.Join(dst, "blobs", "sha256", l.Digest.Encoded()))
			if err != nil {
				t.Fatal(err)
			}
			// the footer is an empty gzip member: replacing it with one that
			// points past the end leaves the uncompressed tar (and diffID) as is
			footer := []byte(fmt.Sprintf("\x1f\x8b\x08\x04\x00\x00\x00\x00\x00\xff\x1a\x00SG\x16\x00%016xSTARGZ\x01\x00\x00\xff\xff\x00\x00\x00\x00\x00\x00\x00\x00", int64(1)<<40))
			b = append(b[:len(b)-len(footer)], footer...)
			l.Digest, l.Size = digestOf(b), int64(len(b))
			os.WriteFile(filepath.Join(dst, "blobs", "sha256", l.Digest.Encoded()), b, 0o644)
		}, "not-lazy"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, variantDir := buildImages(t, tc.name)
			dir := rewriteLayout(t, variantDir, tc.edit)
			tag := strings.ReplaceAll(tc.name, " ", "-")
			ref, _ := s.pushLayout(t, dir, "bad", tag)
			out := s.pull(t, ref)
			// a layer that is not lazy is pulled by lazysnap at line rate;
			// one refused otherwise falls back to containerd
			lineRate := tc.reason == "not-lazy"
			if want := map[bool]string{true: "not lazy, pulled at line rate", false: "unpacked"}[lineRate]; !strings.Contains(out, want) {
				t.Fatalf("pull did not fall back (%s): %s", want, out)
			}
			if !strings.Contains(s.log(), tc.reason) {
				t.Errorf("fallback reason %q not logged:\n%s", tc.reason, s.log())
			}
			// status lists the layer with why it was not lazy, whatever
			// step refused it
			var listed bool
			for _, img := range s.status(t).Images {
				for _, l := range img.Layers {
					listed = listed || img.Ref == ref && !lineRate && l.State == ops.StateFallback && l.FallbackReason == tc.reason && l.Error != "" ||
						img.Ref == ref && lineRate && l.Path == ops.PathLineRate && l.FallbackReason == tc.reason && l.NotLazy != ""
				}
			}
			if !listed {
				t.Errorf("status does not list a layer of %s as fallen back (%s):\n%+v", ref, tc.reason, s.status(t).Images)
			}
			got := s.ctr(t, "run", "--rm", "--snapshotter", "lazysnap", ref, "bad-"+fmt.Sprint(len(tag)), "/bin/sh", "-c", "cat /data/small")
			if got != "hello from a lazy layer\n" {
				t.Fatalf("fallback container printed %q", got)
			}
		})
	}
	// the daemon still serves lazy images
	if out := s.pull(t, goodRef); !strings.Contains(out, "2 of 2 layers lazy") {
		t.Fatalf("good image after bad ones: %s", out)
	}
}

func digestOf(b []byte) digest.Digest { return digest.FromBytes(b) }

// TestTinyCache runs with a chunk cache far smaller than the image: the
// cache evicts, and reads of data a container already has never fail.
func TestTinyCache(t *testing.T) {
	s := startStack(t, "[cache]\n  max_bytes = 8388608\n  memory_bytes = -1\n[fetch]\n  no_background = true\n")
	_, esgzDir := buildImages(t, "tiny cache")
	ref, _ := s.pushLayout(t, esgzDir, "busybox", "tiny")
	s.pull(t, ref)
	want := sha256Of(t, busyboxLayers(t)[1], "data/big")
	for i := range 2 {
		got := s.ctr(t, "run", "--rm", "--snapshotter", "lazysnap", ref, fmt.Sprint("tiny-", i), "/bin/sh", "-c", "sha256sum /data/big | head -c 64")
		if got != want {
			t.Fatalf("run %d: %q, want %s", i, got, want)
		}
	}
	out, err := exec.Command(s.bin, "status", "--config", filepath.Join(s.dir, "lazysnap.toml"), "--json").CombinedOutput()
	if err != nil {
		t.Fatalf("status: %v %s", err, out)
	}
	var st struct {
		Cache struct {
			DiskBytes int64 `json:"disk_bytes"`
			Evictions int64 `json:"evictions"`
		} `json:"cache"`
	}
	if err := json.Unmarshal(out, &st); err != nil {
		t.Fatalf("status JSON: %v\n%s", err, out)
	}
	if st.Cache.Evictions == 0 || st.Cache.DiskBytes > 8<<20 {
		t.Errorf("cache: %d bytes, %d evictions; want evictions and at most 8 MiB\n%s", st.Cache.DiskBytes, st.Cache.Evictions, out)
	}
}
