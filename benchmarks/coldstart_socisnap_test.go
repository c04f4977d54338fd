package benchmarks

// soci-snapshotter itself in the harness (modes soci-snap and
// soci-snap-parallel): `soci-peer serve` (benchmarks/peer/soci) runs
// awslabs/soci-snapshotter v0.16.1's snapshotter as a containerd proxy
// plugin named "soci", configured by its own TOML format. It calls back
// into containerd (its content store client), so containerd starts first,
// with the proxy plugin's socket chosen beforehand, and soci after it.

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/lazysnap/lazysnap/internal/testenv/socipeer"
)

// sociSnapshotter is the proxy plugin's name in containerd's config.
const sociSnapshotter = "soci"

// sociParallelLog is what soci-snapshotter logs (at info) for each layer it
// pulls in parallel_pull_unpack mode: the proof that it, not containerd,
// pulled the layer.
const sociParallelLog = "preparing snapshot with parallel pull/unpack"

// sociSnapConfig is soci-snapshotter's config.toml for pull mode
// sociSnap: its defaults but for what the test environment requires — the
// registry host as its own mirror with the scheme, plain HTTP (without
// the scheme soci would use https), and containerd's socket for its content store
// client — and, for sociParallel, parallel pull and unpack with the
// unpacked blobs discarded (which its docs require unless the content
// store is containerd's), every other knob at its default.
func sociSnapConfig(sociSnap, registryHost, mirrorURL, containerdAddr string) (string, error) {
	var b strings.Builder
	fmt.Fprintf(&b, "[[resolver.host.%q.mirrors]]\n  host = %q\n  insecure = true\n\n", registryHost, mirrorURL)
	fmt.Fprintf(&b, "[content_store]\n  containerd_address = %q\n", containerdAddr)
	switch sociSnap {
	case sociLazy:
	case sociParallel:
		b.WriteString("\n[pull_modes.parallel_pull_unpack]\n  enable = true\n  discard_unpacked_layers = true\n")
	default:
		return "", fmt.Errorf("soci-snapshotter pull mode %q: want %q or %q", sociSnap, sociLazy, sociParallel)
	}
	return b.String(), nil
}

// sociSnapRef is ref with the WAN's host for the registry's: soci's
// parallel pull fetches from the host the image reference names, never
// through its configured mirrors, so both soci modes name the WAN itself
// (its own hosts.toml and soci mirror entry make it plain HTTP), and every
// byte soci fetches crosses it.
func sociSnapRef(ref, registryHost, wanHost string) string {
	if rest, ok := strings.CutPrefix(ref, registryHost+"/"); ok {
		return wanHost + "/" + rest
	}
	return ref
}

// sociSnapSocket is where soci-peer serve will listen in dir.
func sociSnapSocket(dir string) string { return filepath.Join(dir, "soci.sock") }

// startSociSnap starts soci-peer serve in dir (from shortDir) for mode m,
// with containerdAddr as its content store's containerd.
func (b *bench) startSociSnap(t *testing.T, m mode, dir, containerdAddr string) *daemon {
	t.Helper()
	cfg, err := sociSnapConfig(m.sociSnap, b.wan.Host, b.wan.URL, containerdAddr)
	if err != nil {
		t.Fatal(err)
	}
	cfgPath := filepath.Join(dir, "soci.toml")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	return startDaemon(t, dir, sociSnapSocket(dir), socipeer.Binary(t), "serve",
		"--address", sociSnapSocket(dir), "--root", filepath.Join(dir, "root"), "--config", cfgPath, "--log-level", "info")
}

// checkSociSnapPull reports whether soci-snapshotter took every layer the
// way its mode says: lazily (the pull's summary, from the snapshots'
// remote label) or by its parallel pull (its log, one line per layer).
func checkSociSnapPull(m mode, layers int, pullOut, daemonLog string) error {
	switch m.sociSnap {
	case sociLazy:
		if want := fmt.Sprintf("%d of %d layers lazy", layers, layers); !strings.Contains(pullOut, want) {
			return fmt.Errorf("soci-snapshotter did not mount every layer lazily (want %q):\n%s", want, pullOut)
		}
	case sociParallel:
		if n := strings.Count(daemonLog, sociParallelLog); n != layers {
			return fmt.Errorf("soci-snapshotter pulled %d of %d layers in parallel mode (log lines %q)", n, layers, sociParallelLog)
		}
	}
	return nil
}
