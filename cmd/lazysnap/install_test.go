package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/lazysnap/lazysnap/config"
	"github.com/lazysnap/lazysnap/internal/testenv"
)

// TestInstall: make install into a temporary PREFIX puts the binary, the
// two systemd units with that binary's path, and the example
// configuration; systemd-analyze verify finds nothing wrong with the
// units; their ExecStart command lines parse; and a second install leaves
// an edited configuration alone.
func TestInstall(t *testing.T) {
	for _, tool := range []string{"make", "systemd-analyze"} {
		if _, err := exec.LookPath(tool); err != nil {
			testenv.Unavailable(t, "make install test: %v", err)
		}
	}
	bin := lazysnapBinary(t)
	tmp := t.TempDir()
	prefix, sysconf := filepath.Join(tmp, "usr"), filepath.Join(tmp, "etc")
	install := func() {
		t.Helper()
		// -o build: install the binary the tests built, not another build
		cmd := exec.Command("make", "-C", "../..", "-o", "build", "install", "BIN="+bin, "PREFIX="+prefix, "SYSCONFDIR="+sysconf)
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("make install: %v\n%s", err, out)
		}
	}
	install()
	units := filepath.Join(prefix, "lib", "systemd", "system")
	for _, f := range []string{"bin/lazysnap", "share/lazysnap/config.toml.example", "share/lazysnap/grafana/lazysnap.json", "lib/systemd/system/lazysnap.service", "lib/systemd/system/lazysnap-fuse-manager.service"} {
		if _, err := os.Stat(filepath.Join(prefix, f)); err != nil {
			t.Errorf("not installed: %v", err)
		}
	}
	cfg := filepath.Join(sysconf, "lazysnap", "config.toml")
	if c, err := config.Load(cfg); err != nil || c.Root != config.Default().Root {
		t.Errorf("installed configuration: %+v, %v", c, err)
	}

	verify := exec.Command("systemd-analyze", "verify", filepath.Join(units, "lazysnap-fuse-manager.service"), filepath.Join(units, "lazysnap.service"))
	if out, err := verify.CombinedOutput(); err != nil || len(out) > 0 {
		t.Errorf("systemd-analyze verify: %v\n%s", err, out)
	}
	for _, unit := range []string{"lazysnap.service", "lazysnap-fuse-manager.service"} {
		b, err := os.ReadFile(filepath.Join(units, unit))
		if err != nil {
			t.Fatal(err)
		}
		var exec0 string
		for _, line := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(line, "ExecStart="); ok {
				exec0 = v
			}
		}
		// the manager's mounts outlive its restarts only in the unit's fd store
		if unit == "lazysnap-fuse-manager.service" && !regexp.MustCompile(`(?m)^FileDescriptorStoreMax=[1-9]`).Match(b) {
			t.Errorf("%s has no file descriptor store (FileDescriptorStoreMax=)", unit)
		}
		args := strings.Fields(exec0)
		if len(args) < 2 || args[0] != filepath.Join(prefix, "bin", "lazysnap") || !strings.Contains(exec0, "--config "+cfg) {
			t.Fatalf("%s: ExecStart=%s, want the installed binary and configuration", unit, exec0)
		}
		// the command line as systemd runs it, asking for help: its flags parse
		if out, err := exec.Command(args[0], append(args[1:], "-h")...).CombinedOutput(); err != nil {
			t.Errorf("%s: %s -h: %v\n%s", unit, exec0, err, out)
		}
	}

	edited := "root = \"/srv/lazysnap\"\n"
	if err := os.WriteFile(cfg, []byte(edited), 0o644); err != nil {
		t.Fatal(err)
	}
	install()
	if b, _ := os.ReadFile(cfg); string(b) != edited {
		t.Errorf("a second make install replaced the edited configuration with:\n%s", b)
	}
}
