package main

// containerd 2's transfer service (what ctr 2.x and nerdctl 2.x pull
// through) unpacks into lazysnap lazily when lazysnap's proxy plugin
// exports enable_remote_snapshot_annotations = "true" and the service's
// unpack_config names lazysnap; without the export it passes no labels
// and every layer is pulled the ordinary way.

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	ctrdenv "github.com/lazysnap/lazysnap/internal/testenv/containerd"
)

// transferConfig is containerd 2's configuration (version 3) for pulls
// through the transfer service into lazysnap: the proxy plugin's exports
// (exports: whether it asks for the remote-snapshot labels) and an unpack
// configuration for lazysnap beside the default overlayfs one.
func transferConfig(exports bool) string {
	cfg := ""
	if exports {
		cfg += "[proxy_plugins.lazysnap.exports]\n  enable_remote_snapshot_annotations = \"true\"\n"
	}
	for _, sn := range []string{"overlayfs", "lazysnap"} {
		cfg += "[[plugins.\"io.containerd.transfer.v1.local\".unpack_config]]\n  platform = \"linux\"\n  snapshotter = \"" + sn + "\"\n"
	}
	return cfg
}

// nerdctlBinary is $LAZYSNAP_NERDCTL (which must exist when set), else
// the nerdctl scripts/nerdctl.sh builds by default (a test-only tool):
// without either the nerdctl case skips.
func nerdctlBinary(t *testing.T) string {
	p := os.Getenv("LAZYSNAP_NERDCTL")
	if p != "" {
		if _, err := os.Stat(p); err != nil {
			t.Fatalf("LAZYSNAP_NERDCTL: %v", err)
		}
		return p
	}
	p = "/var/tmp/lazysnap-tools/nerdctl"
	if _, err := os.Stat(p); err != nil {
		t.Skipf("no nerdctl at %s (scripts/nerdctl.sh builds it)", p)
	}
	return p
}

func TestTransferServiceContainerd2(t *testing.T) {
	dir := ctrdenv.Containerd2Dir(t)
	t.Setenv(ctrdenv.BinDirEnv, dir)
	_, esgzDir := buildImages(t)
	for _, tc := range []struct {
		name    string
		exports bool
		lazy    int // layers mounted lazily, of 2
	}{
		{"exports", true, 2},
		{"no exports", false, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := startStackWith(t, "[fetch]\n  no_background = true\n", stackOptions{containerd: transferConfig(tc.exports)})
			if s.ctrd.Major() != 2 {
				t.Fatalf("containerd %d, want 2", s.ctrd.Major())
			}
			ref, _ := s.pushLayout(t, esgzDir, "transfer", "ctr")
			// ctr 2.x pulls through the transfer service (--local would not)
			s.ctr(t, "images", "pull", "--hosts-dir", s.hosts, "--snapshotter", "lazysnap", ref)
			if got := lazyLayers(t, s, ref); got != tc.lazy {
				t.Fatalf("ctr pull: %d layers lazy, want %d\n%s", got, tc.lazy, s.log())
			}
			s.runSmall(t, ref, "transfer-ctr")

			if !tc.exports {
				return
			}
			// nerdctl 2.x pulls through the transfer service too, whatever
			// the snapshotter's name
			t.Run("nerdctl", func(t *testing.T) {
				nerdctl := nerdctlBinary(t)
				_, esgz := buildImages(t, "nerdctl") // layers the stack does not have yet
				ref, _ := s.pushLayout(t, esgz, "transfer", "nerdctl")
				nc := func(args ...string) string {
					t.Helper()
					base := []string{"--address", s.ctrd.Address(), "--namespace", s.ctrd.Namespace(), "--snapshotter", "lazysnap",
						"--hosts-dir", s.hosts, "--insecure-registry", "--data-root", filepath.Join(t.TempDir(), "nerdctl")}
					out, err := exec.Command(nerdctl, append(base, args...)...).CombinedOutput()
					if err != nil {
						t.Fatalf("nerdctl %s: %v\n%s\nlazysnap log:\n%s", strings.Join(args, " "), err, out, s.log())
					}
					return string(out)
				}
				nc("pull", "--quiet", ref)
				if got := lazyLayers(t, s, ref); got != 2 {
					t.Fatalf("nerdctl pull: %d layers lazy, want 2\n%s", got, s.log())
				}
				if got := nc("run", "--rm", "--net", "none", ref, "/bin/sh", "-c", "cat /data/small"); !strings.Contains(got, "hello from a lazy layer") {
					t.Fatalf("nerdctl run printed %q", got)
				}
			})
		})
	}
}

// lazyLayers counts the layers of ref that lazysnap serves mounted.
func lazyLayers(t *testing.T, s *stack, ref string) int {
	t.Helper()
	n := 0
	for _, img := range s.status(t).Images {
		if img.Ref != ref {
			continue
		}
		for _, l := range img.Layers {
			if l.Mountpoint != "" {
				n++
			}
		}
	}
	return n
}
