package main

// End-to-end fault tests (issue #7): the real stack of e2e_test.go
// (registry, containerd, runc, lazysnap serve) with a running container
// that reads files lazysnap has not fetched yet, while the registry is slow,
// resets connections, stalls mid-response, redirects to expiring locations,
// rotates its password,
// and while a large layer is read under a memory limit. Reads either return
// the right bytes or fail with EIO and succeed once the fault is gone; they
// never return wrong bytes.

import (
	"archive/tar"
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/lazysnap/lazysnap/convert"
	"github.com/lazysnap/lazysnap/internal/testenv/registry"
	"github.com/lazysnap/lazysnap/internal/testimage"
)

// sha256Hex matches a sha256sum digest.
var sha256Hex = regexp.MustCompile(`^[0-9a-f]{64}$`)

// runSleeper starts a detached container of ref that sleeps, and removes
// it at cleanup.
func (s *stack) runSleeper(t *testing.T, ref, id string) {
	t.Helper()
	s.ctr(t, "run", "-d", "--snapshotter", "lazysnap", ref, id, "/bin/sleep", "600")
	t.Cleanup(func() {
		s.ctrd.Ctr(t, "tasks", "kill", "-s", "KILL", id)
		for range 50 { // bounded wait for the task to stop
			out, _ := s.ctrd.Ctr(t, "tasks", "ls")
			running := false
			for _, line := range strings.Split(string(out), "\n") {
				f := strings.Fields(line)
				running = running || len(f) == 3 && f[0] == id && f[2] != "STOPPED"
			}
			if !running {
				break
			}
			time.Sleep(100 * time.Millisecond)
		}
		s.ctrd.Ctr(t, "tasks", "rm", "-f", id)
		s.ctrd.Ctr(t, "containers", "rm", id)
	})
}

// readSum runs sha256sum of path in container id (a new exec each call)
// and classifies the result against want: "ok" (the right digest), "EIO"
// (the read failed with an I/O error) or a description of anything else.
// A digest that is not want fails the test at once: wrong bytes were
// served.
func (s *stack) readSum(t *testing.T, id, path, want string) string {
	t.Helper()
	execID := fmt.Sprintf("sum-%d", time.Now().UnixNano())
	out, err := s.ctrd.Ctr(t, "tasks", "exec", "--exec-id", execID, id, "/bin/sh", "-c", "sha256sum "+path+" | head -c 64")
	got := string(out)
	switch {
	case err == nil && got == want:
		return "ok"
	case sha256Hex.MatchString(got):
		t.Fatalf("WRONG BYTES: sha256 of %s in the container is %s, want %s\nlazysnap log:\n%s", path, got, want, s.log())
	case strings.Contains(got, "Input/output error"):
		return "EIO"
	case strings.Contains(strings.ToLower(got), "connection reset by peer"):
		return "ECONNRESET"
	}
	return fmt.Sprintf("other (%v): %q", err, got)
}

// wantSums are the digests of the data layer's big files.
type wantSums struct{ big, other string }

func dataSums(t *testing.T) wantSums {
	l := busyboxLayers(t)[1]
	return wantSums{big: sha256Of(t, l, "data/big"), other: sha256Of(t, l, "data/other")}
}

// pushVariant builds, pushes and lazily pulls an image whose layers no
// other image of the test shares, so its files are not cached yet.
func (s *stack) pushVariant(t *testing.T, variant string) string {
	t.Helper()
	_, dir := buildImages(t, variant)
	tag := strings.Trim(regexp.MustCompile(`[^a-zA-Z0-9_.-]+`).ReplaceAllString(variant, "-"), "-.")
	ref, _ := s.pushLayout(t, dir, "faults", tag)
	if out := s.pull(t, ref); !strings.Contains(out, "2 of 2 layers lazy") {
		t.Fatalf("pull: %s\nlazysnap log:\n%s", out, s.log())
	}
	return ref
}

// TestRegistryFaultsE2E breaks the registry (through the WAN proxy's fault
// modes) under a running container reading uncached files.
func TestRegistryFaultsE2E(t *testing.T) {
	// a short stall timeout, so that the stalling case is over in seconds
	s := startStack(t, "[fetch]\n  no_background = true\n  timeout = \"20s\"\n  stall_timeout = \"1s\"\n")
	sums := dataSums(t)
	type read struct{ path, want string }
	big, other := read{"/data/big", sums.big}, read{"/data/other", sums.other}
	tests := []struct {
		name   string
		faults registry.Faults
		// reads made under the fault, in order; a pause before the last
		// one when pause is set
		reads []read
		pause time.Duration
		// wantEIO: the reads fail with EIO and succeed once the fault is
		// switched off; otherwise they succeed under the fault
		wantEIO bool
		// exercised checks that the fault really happened
		exercised func(registry.WANStats) bool
	}{
		{
			// thousands of loopback round trips, well within the 20 s fetch timeout
			name:      "slow registry",
			faults:    registry.Faults{Delay: 3 * time.Second},
			reads:     []read{other},
			exercised: func(st registry.WANStats) bool { return st.Delayed > 0 },
		},
		{
			name:      "some connections reset mid-response",
			faults:    registry.Faults{ResetEvery: 3, ResetAfter: 64 << 10},
			reads:     []read{big, other},
			exercised: func(st registry.WANStats) bool { return st.Resets > 0 },
		},
		{
			name:      "some connections reset before the response",
			faults:    registry.Faults{ResetEvery: 2},
			reads:     []read{big, other},
			exercised: func(st registry.WANStats) bool { return st.Resets > 0 },
		},
		{
			// the stalled responses are given up after the 1 s stall
			// timeout, far within the 20 s fetch timeout, and retried
			name:      "some connections stall mid-response",
			faults:    registry.Faults{StallEvery: 3, StallAfter: 64 << 10},
			reads:     []read{big, other},
			exercised: func(registry.WANStats) bool { return s.wan.Stalls() > 0 },
		},
		{
			name:      "every connection reset mid-response",
			faults:    registry.Faults{ResetEvery: 1, ResetAfter: 64 << 10},
			reads:     []read{other},
			wantEIO:   true,
			exercised: func(st registry.WANStats) bool { return st.Resets > 0 },
		},
		{
			name:      "every connection reset before the response",
			faults:    registry.Faults{ResetEvery: 1},
			reads:     []read{big},
			wantEIO:   true,
			exercised: func(st registry.WANStats) bool { return st.Resets > 0 },
		},
		{
			name:      "redirect location expiring after 2 uses",
			faults:    registry.Faults{RedirectUses: 2},
			reads:     []read{big, other},
			exercised: func(st registry.WANStats) bool { return st.Redirects >= 2 && st.Expired > 0 },
		},
		{
			name:   "redirect location expiring after a time",
			faults: registry.Faults{RedirectUses: 1 << 20, RedirectTTL: 500 * time.Millisecond},
			reads:  []read{other, big},
			// past the location's lifetime: the next read finds it expired
			pause:     time.Second,
			exercised: func(st registry.WANStats) bool { return st.Redirects >= 2 && st.Expired > 0 },
		},
	}
	for i, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ref := s.pushVariant(t, tc.name)
			id := fmt.Sprint("fault-", i)
			s.runSleeper(t, ref, id)
			// the tools the reads run (busybox) are fetched now: the faults
			// are for the data files
			s.ctr(t, "tasks", "exec", "--exec-id", "warm", id, "/bin/cat", "/bin/busybox", "/data/small")
			failedBefore := strings.Count(s.log(), "layer read failed")
			s.wan.Reset()
			s.wan.SetFaults(tc.faults)
			defer s.wan.SetFaults(registry.Faults{})
			for j, r := range tc.reads {
				if j == len(tc.reads)-1 && tc.pause > 0 {
					time.Sleep(tc.pause)
				}
				want := "ok"
				if tc.wantEIO {
					want = "EIO"
				}
				got := s.readSum(t, id, r.path, r.want)
				if got != want {
					t.Fatalf("read of %s under the fault: %s, want %s\nproxy: %v\nlazysnap log:\n%s", r.path, got, want, s.wan.Stats(), s.log())
				}
			}
			st := s.wan.Stats()
			t.Logf("proxy: %v; %d stalls", st, s.wan.Stalls())
			if !tc.exercised(st) {
				t.Fatalf("the fault was not exercised: %v", st)
			}
			if !tc.wantEIO {
				// lazysnap absorbed the fault itself: not one of its reads
				// failed (the kernel would retry a failed read-ahead, and
				// hide a missing retry in the fetcher)
				if n := strings.Count(s.log(), "layer read failed") - failedBefore; n > 0 {
					t.Fatalf("%d layer reads failed under the fault\nlazysnap log:\n%s", n, s.log())
				}
				return
			}
			s.wan.SetFaults(registry.Faults{})
			for _, r := range tc.reads {
				if got := s.readSum(t, id, r.path, r.want); got != "ok" {
					t.Fatalf("read of %s after the fault stopped: %s\nlazysnap log:\n%s", r.path, got, s.log())
				}
			}
		})
	}
}

// writeDockerConfig writes a Docker config.json with basic credentials for
// host, atomically (lazysnap may read it at any time).
func writeDockerConfig(t *testing.T, path, host, user, pass string) {
	t.Helper()
	auth := base64.StdEncoding.EncodeToString([]byte(user + ":" + pass))
	b := fmt.Sprintf(`{"auths":{%q:{"auth":%q}}}`, host, auth)
	if err := os.WriteFile(path+".tmp", []byte(b), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(path+".tmp", path); err != nil {
		t.Fatal(err)
	}
}

// TestCredentialRotationE2E changes the registry's password under a
// running container: with the old password in lazysnap's Docker config,
// uncached reads fail with EIO; once the config has the new password they
// succeed, without restarting lazysnap.
func TestCredentialRotationE2E(t *testing.T) {
	dockerConfig := filepath.Join(t.TempDir(), "config.json")
	s := startStack(t, fmt.Sprintf("  docker_config = %q\n[fetch]\n  no_background = true\n  timeout = \"20s\"\n", dockerConfig))
	// a second registry, with TLS and htpasswd, reached directly; the
	// same endpoint again as a [host] table, without which containerd
	// 1.6's ctr-remote cannot parse hosts.toml
	reg := registry.Start(t, registry.Options{TLS: true, Username: "alice", Password: "first-password"})
	if _, err := registry.WriteHostsConfig(s.hosts, reg.Host, reg.Endpoint(), reg.Endpoint()); err != nil {
		t.Fatal(err)
	}
	writeDockerConfig(t, dockerConfig, reg.Host, "alice", "first-password")
	authStack := *s // the same stack, pushing to the auth registry
	authStack.reg = reg
	_, dir := buildImages(t, "credential rotation")
	ref, _ := authStack.pushLayout(t, dir, "private/busybox", "v1")
	// lazysnap pull reads the credentials from the same Docker config
	if out := s.pull(t, ref, "--docker-config", dockerConfig); !strings.Contains(out, "2 of 2 layers lazy") {
		t.Fatalf("pull: %s\nlazysnap log:\n%s", out, s.log())
	}
	pid := s.cmd.Process.Pid
	s.runSleeper(t, ref, "rotation")
	sums := dataSums(t)
	// busybox (the tools) is fetched now, with the first password
	if got := s.ctr(t, "tasks", "exec", "--exec-id", "small", "rotation", "/bin/sh", "-c", "cat /bin/busybox >/dev/null && cat /data/small"); got != "hello from a lazy layer\n" {
		t.Fatalf("cat /data/small: %q", got)
	}

	if err := reg.SetCredentials("alice", "second-password"); err != nil {
		t.Fatal(err)
	}
	reg.Restart()
	t.Run("old password", func(t *testing.T) {
		if got := s.readSum(t, "rotation", "/data/other", sums.other); got != "EIO" {
			t.Fatalf("read with the old password: %s, want EIO\nlazysnap log:\n%s", got, s.log())
		}
		if log := s.log(); !strings.Contains(log, "unauthorized") && !strings.Contains(log, "401") {
			t.Errorf("the failed read's cause (unauthorized) was not logged:\n%s", log)
		}
	})
	t.Run("new password", func(t *testing.T) {
		writeDockerConfig(t, dockerConfig, reg.Host, "alice", "second-password")
		for _, r := range []struct{ path, want string }{{"/data/other", sums.other}, {"/data/big", sums.big}} {
			if got := s.readSum(t, "rotation", r.path, r.want); got != "ok" {
				t.Fatalf("read of %s with the new password: %s\nlazysnap log:\n%s", r.path, got, s.log())
			}
		}
		if s.cmd.Process.Pid != pid || s.cmd.ProcessState != nil {
			t.Fatalf("lazysnap was restarted (pid %d, was %d)", s.cmd.Process.Pid, pid)
		}
	})
}

// hugeLayer is a tar layer with one file of size random bytes at
// data/huge, and the file's sha256.
func hugeLayer(t *testing.T, size int) ([]byte, string) {
	t.Helper()
	data := make([]byte, size)
	rand.NewChaCha8([32]byte{'h', 'u', 'g', 'e'}).Read(data)
	var b bytes.Buffer
	b.Grow(size + 4<<10)
	tw := tar.NewWriter(&b)
	mt := time.Unix(1700000000, 0)
	tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: "data/", Mode: 0o755, ModTime: mt})
	tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: "data/huge", Mode: 0o644, Size: int64(size), ModTime: mt})
	tw.Write(data)
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(data)
	return b.Bytes(), hex.EncodeToString(sum[:])
}

// stackPIDs returns the pids of the stack's lazysnap processes: serve, the
// processes its pid files (*.pid under the root) name, and every process
// of the lazysnap binary that descends from serve or names the stack's
// directory on its command line (a fuse-manager child, say).
func (s *stack) stackPIDs(t *testing.T) []int {
	t.Helper()
	serve := s.cmd.Process.Pid
	found := map[int]bool{serve: true}
	root := filepath.Join(s.dir, "root")
	filepath.WalkDir(root, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return nil
		}
		if d.IsDir() && strings.Count(strings.TrimPrefix(p, root), "/") >= 2 {
			return filepath.SkipDir // pid files sit at the top of the root
		}
		if !d.IsDir() && strings.HasSuffix(p, ".pid") {
			b, _ := os.ReadFile(p)
			if pid, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil && pid > 0 && alive(pid) {
				found[pid] = true
			}
		}
		return nil
	})
	parent := map[int]int{}
	var ours []int
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			continue
		}
		// pid (comm) state ppid ...: comm may hold spaces and parentheses
		if f := strings.Fields(string(stat[bytes.LastIndexByte(stat, ')')+1:])); len(f) > 1 {
			parent[pid], _ = strconv.Atoi(f[1])
		}
		if exe, _ := os.Readlink(fmt.Sprintf("/proc/%d/exe", pid)); strings.TrimSuffix(exe, " (deleted)") == s.bin {
			ours = append(ours, pid)
		}
	}
	for _, pid := range ours {
		cmdline, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
		descends := false
		for p, n := pid, 0; p > 1 && n < 64; p, n = parent[p], n+1 {
			descends = descends || p == serve
		}
		if descends || bytes.Contains(cmdline, []byte(s.dir)) {
			found[pid] = true
		}
	}
	var pids []int
	for pid := range found {
		pids = append(pids, pid)
	}
	return pids
}

// peakRSS is a process's VmHWM (peak resident set) in bytes.
func peakRSS(t *testing.T, pid int) int64 {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatalf("status of lazysnap process %d: %v", pid, err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			if err != nil {
				t.Fatalf("VmHWM of %d: %q", pid, line)
			}
			return kb << 10
		}
	}
	t.Fatalf("no VmHWM for process %d", pid)
	return 0
}

// TestMemoryCapE2E reads a layer larger than the memory bound through a
// container, with background fetch on, and checks the daemon's peak RSS.
func TestMemoryCapE2E(t *testing.T) {
	const (
		// memory_limit: GOMEMLIMIT, the soft cap on the Go heap.
		memoryLimit = 128 << 20
		// peakBound on the peak RSS of all of the stack's lazysnap
		// processes together (serve and, where FUSE lives in its own
		// process, the fuse manager, each with its own GOMEMLIMIT). The
		// process that fetches holds its heap near memory_limit (128 MiB),
		// which includes the in-memory chunk cache (64 MiB by default); on
		// top come what GOMEMLIMIT does not count or lets through while
		// the collector catches up: goroutine stacks, FUSE request
		// buffers, runtime metadata, the binary's text and data and
		// transient overshoot, plus the other process's runtime (serve
		// alone: ~27 MiB resident). Twice the heap cap leaves room for
		// that (measured: ~95 MiB in one process, ~125 MiB in two) and
		// still fails a daemon that holds the 384 MiB layer (or its
		// decompressed file) in memory.
		peakBound = 256 << 20
		hugeSize  = 384 << 20
	)
	s := startStack(t, "")
	// memory_limit is a top-level key, and startStack's extra config goes
	// into [registry]: put it first and restart lazysnap and its fuse
	// manager, which read it at start (nothing is mounted yet)
	cfgPath := filepath.Join(s.dir, "lazysnap.toml")
	cfg, err := os.ReadFile(cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(cfgPath, append([]byte(fmt.Sprintf("memory_limit = %d\n", memoryLimit)), cfg...), 0o644); err != nil {
		t.Fatal(err)
	}
	oldManager := s.managerPID()
	s.stopLazysnap(t)
	s.stopManager(t, syscall.SIGTERM)
	s.startLazysnap(t)
	if m := s.managerPID(); m != 0 && m == oldManager {
		t.Fatalf("the fuse manager (pid %d) was not restarted with memory_limit", m)
	}

	huge, want := hugeLayer(t, hugeSize)
	tmp := t.TempDir()
	gzipDir, esgzDir := filepath.Join(tmp, "gzip"), filepath.Join(tmp, "esgz")
	if _, err := testimage.Layout(gzipDir, "lazysnap.test/huge:1", busyboxLayers(t, "memory cap")[0], huge); err != nil {
		t.Fatal(err)
	}
	huge = nil
	if _, err := convert.Image(t.Context(), gzipDir, esgzDir, convert.Options{}); err != nil {
		t.Fatal(err)
	}
	os.RemoveAll(gzipDir)
	ref, size := s.pushLayout(t, esgzDir, "huge", "v1")
	if out := s.pull(t, ref); !strings.Contains(out, "2 of 2 layers lazy") {
		t.Fatalf("pull: %s\nlazysnap log:\n%s", out, s.log())
	}
	got := s.ctr(t, "run", "--rm", "--snapshotter", "lazysnap", ref, "huge-reader", "/bin/sh", "-c", "sha256sum /data/huge | head -c 64")
	if got != want {
		t.Fatalf("sha256 of data/huge in the container %q, want %s", got, want)
	}
	pids := s.stackPIDs(t)
	var total int64
	for _, pid := range pids {
		rss := peakRSS(t, pid)
		cmdline, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
		t.Logf("lazysnap process %d (%s): peak RSS %.1f MiB", pid, bytes.ReplaceAll(cmdline, []byte{0}, []byte{' '}), float64(rss)/(1<<20))
		total += rss
	}
	t.Logf("%d MiB image fetched through %d lazysnap process(es): peak RSS %.1f MiB in all, bound %d MiB",
		size>>20, len(pids), float64(total)/(1<<20), peakBound>>20)
	if total > peakBound {
		t.Fatalf("peak RSS of lazysnap %.1f MiB, want at most %d MiB (memory_limit %d MiB)", float64(total)/(1<<20), peakBound>>20, memoryLimit>>20)
	}
}
