package main

// `lazysnap pull` end to end against each containerd the machine has:
// Debian's 1.6 always, and a 2.x build when LAZYSNAP_CONTAINERD2_DIR names
// one (scripts/containerd2.sh builds it). Checks the progress a non-terminal
// gets, the summary, and that containers run on the pulled images.

import (
	"bytes"
	"io"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/lazysnap/lazysnap/internal/testenv"
	ctrdenv "github.com/lazysnap/lazysnap/internal/testenv/containerd"
	"github.com/lazysnap/lazysnap/internal/testenv/registry"
	"github.com/lazysnap/lazysnap/pull"
)

func TestPullThroughContainerd(t *testing.T) {
	// containerd's own download and unpack of the gzip images is what the
	// progress shows: layers that are not lazy are left to it
	// (TestLineRatePull covers lazysnap pulling them)
	eachContainerd(t, "[fetch]\n  no_background = true\n[pull]\n  line_rate = false\n", func(t *testing.T, s *stack, _ int) {
		testPullProgress(t, s)
	})
}

// eachContainerd runs fn, in a subtest, on a stack (startStack with
// extraConfig) of each containerd the machine has: Debian's 1.6 always,
// and a 2.x build when LAZYSNAP_CONTAINERD2_DIR names one.
func eachContainerd(t *testing.T, extraConfig string, fn func(t *testing.T, s *stack, major int)) {
	for _, tc := range []struct {
		name   string
		binDir func(testing.TB) string // the containerd build; nil: Debian's
		major  int
	}{
		{"debian containerd 1.6", nil, 1},
		{"containerd 2", ctrdenv.Containerd2Dir, 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := ""
			if tc.binDir != nil {
				dir = tc.binDir(t)
			}
			// startStack starts containerd with fixed options: choose the
			// build through the testenv's default
			t.Setenv(ctrdenv.BinDirEnv, dir)
			s := startStack(t, extraConfig)
			if got := s.ctrd.Major(); got != tc.major {
				t.Fatalf("containerd major version %d, want %d", got, tc.major)
			}
			fn(t, s, tc.major)
		})
	}
}

// progressStates returns, per layer, the states its progress lines show,
// in order; any line that is neither progress nor summary fails t.
func progressStates(t *testing.T, out string) map[int][]string {
	t.Helper()
	if strings.ContainsAny(out, "\x1b\r") {
		t.Fatalf("plain output has terminal control characters: %q", out)
	}
	// layer index, short digest, size, state
	progressLine := regexp.MustCompile(`^layer (\d+) sha256:[0-9a-f]{12} +[0-9.]+ [KMG]?i?B  (.*)$`)
	states := map[int][]string{}
	for _, line := range strings.Split(strings.TrimSuffix(out, "\n"), "\n") {
		if m := progressLine.FindStringSubmatch(line); m != nil {
			i, _ := strconv.Atoi(m[1])
			states[i] = append(states[i], m[2])
		} else if !strings.HasPrefix(line, "layer ") && !strings.HasPrefix(line, "pulled ") {
			t.Errorf("unexpected output line %q", line)
		}
	}
	return states
}

// pullOut runs `lazysnap pull` with flags through hosts and returns its
// standard output.
func (s *stack) pullOut(t *testing.T, hosts, ref string, flags ...string) string {
	t.Helper()
	args := append([]string{"pull", "--address", s.ctrd.Address(), "--namespace", s.ctrd.Namespace(), "--hosts-dir", hosts}, flags...)
	var stderr bytes.Buffer
	cmd := exec.Command(s.bin, append(args, ref)...)
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("lazysnap pull: %v\n%s%s\nlazysnap log:\n%s", err, out, stderr.Bytes(), s.log())
	}
	t.Logf("$ lazysnap pull %s\n%s", strings.TrimSpace(strings.Join(flags, " ")+" "+ref), out)
	return string(out)
}

// pullTTY runs `lazysnap pull` on a pseudo-terminal and returns what the
// terminal received.
func (s *stack) pullTTY(t *testing.T, hosts, ref string) string {
	t.Helper()
	ptmx, pts := testenv.OpenPTY(t, 100)
	var stderr, out bytes.Buffer
	cmd := exec.Command(s.bin, "pull", "--address", s.ctrd.Address(), "--namespace", s.ctrd.Namespace(), "--hosts-dir", hosts, ref)
	cmd.Stdout, cmd.Stderr = pts, &stderr
	copied := make(chan struct{})
	go func() { io.Copy(&out, ptmx); close(copied) }()
	err := cmd.Run()
	pts.Close() // the last terminal side: reads of ptmx now end
	<-copied
	if err != nil {
		t.Fatalf("lazysnap pull: %v\n%q%s\nlazysnap log:\n%s", err, out.Bytes(), stderr.Bytes(), s.log())
	}
	return out.String()
}

func (s *stack) runSmall(t *testing.T, ref, id string) {
	t.Helper()
	if got := s.ctr(t, "run", "--rm", "--snapshotter", "lazysnap", ref, id, "/bin/sh", "-c", "cat /data/small"); got != "hello from a lazy layer\n" {
		t.Fatalf("container printed %q", got)
	}
}

// slowHosts returns a hosts directory through which the stack's registry
// serves 8 MiB/s: the ~28 MB data layer takes about three seconds.
func slowHosts(t *testing.T, s *stack) string {
	t.Helper()
	slow := registry.StartWANProxy(t, s.reg.URL(), registry.WANOptions{BandwidthBytesPerSec: 8 << 20})
	hosts := t.TempDir()
	if _, err := registry.WriteHostsConfig(hosts, s.reg.Host, registry.Endpoint{URL: slow.URL}); err != nil {
		t.Fatal(err)
	}
	return hosts
}

func testPullProgress(t *testing.T, s *stack) {
	gzipDir, esgzDir := buildImages(t)

	t.Run("lazy", func(t *testing.T) {
		ref, _ := s.pushLayout(t, esgzDir, "progress", "esgz")
		out := s.pullOut(t, s.hosts, ref)
		states := progressStates(t, out)
		for i := range 2 {
			if got := strings.Join(states[i], ", "); got != "lazy (remote snapshot)" {
				t.Errorf("layer %d went through %q, want only lazy (remote snapshot)\n%s", i, got, out)
			}
		}
		if !strings.Contains(out, "2 of 2 layers lazy") {
			t.Fatalf("pull: %s\nlazysnap log:\n%s", out, s.log())
		}
		s.runSmall(t, ref, "progress-lazy")
	})

	t.Run("fallback through a slow link", func(t *testing.T) {
		ref, _ := s.pushLayout(t, gzipDir, "progress", "gzip")
		out := s.pullOut(t, slowHosts(t, s), ref)
		states := progressStates(t, out)
		for i := range 2 {
			if got := states[i]; len(got) == 0 || got[len(got)-1] != "unpacked" {
				t.Errorf("layer %d went through %q, want to end unpacked\n%s", i, got, out)
			}
		}
		// the data layer's download shows bytes arriving, in order
		downloading := regexp.MustCompile(`^downloading [0-9.]+ [KMG]?i?B / [0-9.]+ MiB \((\d+)%\)$`)
		last, partial := -1, 0
		for _, st := range states[1] {
			m := downloading.FindStringSubmatch(st)
			if m == nil {
				continue
			}
			pct, _ := strconv.Atoi(m[1])
			if pct <= last {
				t.Errorf("download progress went from %d%% to %d%%\n%s", last, pct, out)
			}
			if pct > 0 && pct < 100 {
				partial++
			}
			last = pct
		}
		if partial == 0 {
			t.Errorf("no partial download progress of the data layer\n%s", out)
		}
		if !strings.Contains(out, "0 of 2 layers lazy") {
			t.Fatalf("pull: %s", out)
		}
		s.runSmall(t, ref, "progress-gzip")
	})

	t.Run("terminal, slow link", func(t *testing.T) {
		gz, _ := buildImages(t, "tty") // layers the stack does not have yet
		ref, _ := s.pushLayout(t, gz, "progress", "tty")
		out := s.pullTTY(t, slowHosts(t, s), ref)
		live, summary, ok := strings.Cut(out, "\r\x1b[J")
		if !ok || !strings.Contains(summary, "0 of 2 layers lazy") || strings.Contains(summary, "\x1b") {
			t.Fatalf("terminal got %q, want redrawn layer lines, erased, then the summary", out)
		}
		// every frame but the first starts by moving up over the last one
		frames := strings.Count(live, "\x1b[2A") + 1
		took := regexp.MustCompile(` in ([0-9.]+m?s):`).FindStringSubmatch(summary)
		if took == nil {
			t.Fatalf("no duration in the summary %q", summary)
		}
		d, err := time.ParseDuration(took[1])
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("%d frames in %v", frames, d)
		// one frame a tick at the most (the ticker starts a little before the
		// clock of the summary and stops a little after), and the last
		if max := int(d/pull.DefaultInterval) + 3; frames > max || frames < 3 {
			t.Errorf("%d frames in %v: want at least 3 (it took a while) and at most %d (10 Hz)", frames, d, max)
		}
		if !strings.Contains(live, "downloading") || !strings.Contains(live, "unpacked") {
			t.Errorf("frames show no download and unpack: %q", live)
		}
	})

	t.Run("quiet", func(t *testing.T) {
		out := s.pullOut(t, s.hosts, s.reg.Ref("progress", "esgz"), "--quiet")
		if !regexp.MustCompile(`^pulled \S+ in \S+: 2 of 2 layers lazy\n$`).MatchString(out) {
			t.Errorf("quiet pull printed %q, want the final line only", out)
		}
	})

	t.Run("tty forced", func(t *testing.T) {
		out := s.pullOut(t, s.hosts, s.reg.Ref("progress", "esgz"), "--progress", "tty")
		live, summary, ok := strings.Cut(out, "\r\x1b[J")
		if !ok || !strings.Contains(live, "\r\x1b[2Klayer 1 ") || !strings.Contains(summary, "2 of 2 layers lazy") || strings.Contains(summary, "\x1b") {
			t.Errorf("tty pull: want layer lines drawn, erased, then the summary; got %q", out)
		}
	})
}
