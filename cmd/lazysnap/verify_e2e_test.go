package main

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/lazysnap/lazysnap/config"
	"github.com/lazysnap/lazysnap/remote"
)

// TestBadBlobE2E: the registry serves a data layer whose chunks all match
// the TOC but whose blob is not the one its digest names (a gzip header
// field changed: no chunk digest covers it). The container reads the right
// files; once the layer is complete, lazysnap finds the blob bad and says
// so in status and metrics; the running container keeps reading its
// files; a new pull of the layer (after the image is removed, and after a
// restart: the mark is kept) is refused lazily with reason verification
// and falls back to containerd's ordinary pull (here after the registry's
// blob is repaired: containerd verifies the digest of what it pulls).
func TestBadBlobE2E(t *testing.T) {
	s := startStack(t, "")
	_, dir := buildImages(t, "bad blob")
	ref, _ := s.pushLayout(t, dir, "badblob", "v1")
	data := layoutLayers(t, dir)[1]
	p := s.reg.BlobPath(data.Digest.String())
	orig, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	bad := bytes.Clone(orig)
	if bad[0] != 0x1f || bad[1] != 0x8b {
		t.Fatal("the data layer does not start with a gzip member")
	}
	bad[4] ^= 0x5a // the first member's modification time
	if err := os.WriteFile(p, bad, 0o644); err != nil {
		t.Fatal(err)
	}

	if out := s.pull(t, ref); !strings.Contains(out, "2 of 2 layers lazy") {
		t.Fatalf("pull: %s\nlazysnap log:\n%s", out, s.log())
	}
	s.runSleeper(t, ref, "reader")
	sums := dataSums(t)
	for _, f := range []struct{ path, want string }{{"/data/big", sums.big}, {"/data/other", sums.other}} {
		if got := s.readSum(t, "reader", f.path, f.want); got != "ok" {
			t.Fatalf("read %s: %s", f.path, got)
		}
	}
	var state string
	waitFor(t, 2*time.Minute, "the data layer verified", func() (bool, string) {
		state = ""
		for _, img := range s.status(t).Images {
			for _, l := range img.Layers {
				if l.Digest == data.Digest.String() {
					state = l.Verification
				}
			}
		}
		return state != "" && state != remote.VerifyPending && state != remote.VerifyRunning, state
	})
	if !strings.HasPrefix(state, "bad: ") || !strings.Contains(state, "not "+data.Digest.String()) {
		t.Fatalf("data layer's verification: %q, want bad: its digest differs", state)
	}
	rep := s.status(t)
	if len(rep.BadLayers) != 1 || rep.BadLayers[0].Digest != data.Digest.String() || rep.Verification == nil || rep.Verification.Bad != 1 {
		t.Fatalf("status: bad layers %+v, verification %+v", rep.BadLayers, rep.Verification)
	}
	text, err := exec.Command(s.bin, "status", "--config", filepath.Join(s.dir, "lazysnap.toml")).CombinedOutput()
	if err != nil || !strings.Contains(string(text), "BAD LAYER "+data.Digest.String()) {
		t.Fatalf("lazysnap status: %v\n%s", err, text)
	}
	metrics := scrape(t, unixClient(filepath.Join(s.dir, config.StatusSocketName)), "http://lazysnap/metrics")
	for _, name := range []string{"lazysnap_bad_layers", `lazysnap_layer_verifications_total{result="bad"}`} {
		if metrics[name] != 1 {
			t.Errorf("metric %s = %v, want 1", name, metrics[name])
		}
	}
	// the running container still reads its (TOC-verified) files
	if got := s.readSum(t, "reader", "/data/other", sums.other); got != "ok" {
		t.Fatalf("read after the layer was marked bad: %s", got)
	}

	// a new mount of the blob is refused; the ordinary pull verifies the
	// digest, and fails while the registry serves the bad bytes
	s.ctr(t, "tasks", "kill", "-s", "KILL", "reader")
	waitFor(t, 30*time.Second, "the reader stopped", func() (bool, string) {
		out, _ := s.ctrd.Ctr(t, "tasks", "ls")
		return !strings.Contains(string(out), "reader ") || strings.Contains(string(out), "STOPPED"), string(out)
	})
	s.ctr(t, "tasks", "rm", "-f", "reader")
	s.ctr(t, "containers", "rm", "reader")
	s.ctr(t, "images", "rm", "--sync", ref)
	s.stopLazysnap(t)
	s.stopManager(t, syscall.SIGTERM)
	s.startLazysnap(t)
	// the registry serves the right blob again (else containerd's
	// ordinary pull, which verifies the digest, fails): the mark still
	// refuses the lazy mount, and the layer is pulled the ordinary way
	if err := os.WriteFile(p, orig, 0o644); err != nil {
		t.Fatal(err)
	}
	if out := s.pull(t, ref); !strings.Contains(out, "1 of 2 layers lazy") {
		t.Fatalf("pull after the restart: %s\nlazysnap log:\n%s", out, s.log())
	}
	var fellBack string
	for _, img := range s.status(t).Images {
		for _, l := range img.Layers {
			if l.Digest == data.Digest.String() {
				fellBack = fmt.Sprintf("%s (%s): %s", l.State, l.FallbackReason, l.Error)
			}
		}
	}
	if !strings.Contains(fellBack, "fallback (verification)") || !strings.Contains(fellBack, "found bad") {
		t.Fatalf("the bad layer after the restart: %q, want a fallback for verification", fellBack)
	}
	if got := s.ctr(t, "run", "--rm", "--snapshotter", "lazysnap", ref, "after", "/bin/sh", "-c", "sha256sum /data/other | head -c 64"); got != sums.other {
		t.Fatalf("data/other from the ordinary pull: %q", got)
	}
}
