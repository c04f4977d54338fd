package containerd_test

import (
	"bytes"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/lazysnap/lazysnap/internal/testenv/containerd"
	"github.com/lazysnap/lazysnap/internal/testimage"
	"github.com/lazysnap/lazysnap/internal/testtar"
)

func TestStart(t *testing.T) {
	for _, tc := range []struct {
		name   string
		binDir func(testing.TB) string // Options.BinDir; nil: the Debian binaries
		config string                  // in config.toml
	}{
		{"debian", nil, "version = 2\n"},
		{"containerd 2", containerd.Containerd2Dir, "version = 3\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var opts containerd.Options
			if tc.binDir != nil {
				opts.BinDir = tc.binDir(t)
			}
			testStart(t, opts, tc.config)
		})
	}
}

func testStart(t *testing.T, opts containerd.Options, wantConfig string) {
	var dir string
	var pid int
	t.Run("daemon", func(t *testing.T) {
		opts.ExtraConfig = "[plugins.\"io.containerd.gc.v1.scheduler\"]\n  pause_threshold = 0.03\n"
		c := containerd.Start(t, opts)
		dir = c.Dir()
		if len(c.Address()) >= 100 {
			t.Errorf("socket path %q too long", c.Address())
		}
		archive, err := testimage.OCIArchive("lazysnap.test/start:v1", testtar.Synthetic(1<<10))
		if err != nil {
			t.Fatal(err)
		}
		path := filepath.Join(dir, "img.tar")
		if err := os.WriteFile(path, archive, 0o600); err != nil {
			t.Fatal(err)
		}
		if out, err := c.Ctr(t, "images", "import", "--no-unpack", path); err != nil {
			t.Fatalf("%v\n%s", err, out)
		}
		out, err := c.Ctr(t, "images", "ls", "-q")
		if err != nil || strings.TrimSpace(string(out)) != "lazysnap.test/start:v1" {
			t.Errorf("images ls: %v %q", err, out)
		}
		out, err = c.Ctr(t, "plugins", "ls")
		if err != nil {
			t.Fatalf("%v\n%s", err, out)
		}
		for _, line := range strings.Split(string(out), "\n") {
			if f := strings.Fields(line); len(f) >= 2 && (f[1] == "cri" || f[1] == "nri" || strings.HasPrefix(f[0], "io.containerd.cri.")) {
				t.Errorf("CRI or NRI plugin not disabled: %s", line)
			}
		}
		b, err := os.ReadFile(filepath.Join(dir, "config.toml"))
		if err != nil || !bytes.Contains(b, []byte("pause_threshold = 0.03")) || !bytes.HasPrefix(b, []byte(wantConfig)) {
			t.Errorf("config.toml lacks the extra config: %v\n%s", err, b)
		}
		if _, err := os.Stat(c.LogPath()); err != nil {
			t.Error(err)
		}
		pid = daemonPid(t, dir)
	})
	if dir == "" {
		return // skipped
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Errorf("%s not removed: %v", dir, err)
	}
	if pid > 0 && syscall.Kill(pid, 0) == nil {
		t.Errorf("containerd pid %d still running", pid)
	}
}

// daemonPid finds the containerd process serving dir's config.
func daemonPid(t *testing.T, dir string) int {
	t.Helper()
	cmdlines, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, p := range cmdlines {
		b, err := os.ReadFile(p)
		if err == nil && bytes.Contains(b, []byte(filepath.Join(dir, "config.toml"))) {
			if pid, err := strconv.Atoi(filepath.Base(filepath.Dir(p))); err == nil {
				return pid
			}
		}
	}
	t.Error("containerd process not found")
	return 0
}
