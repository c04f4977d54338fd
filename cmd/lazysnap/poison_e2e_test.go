package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/lazysnap/lazysnap/internal/testenv/registry"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// TestLyingRegistryE2E: image A runs lazily and reads its files; image B,
// from a second registry that lies (B's data layer is served under the
// digest of A's data layer, with B's own TOC), is pulled next. In lazy
// mode a blob digest is only a name, so B must not change a byte A's
// container reads: A's container reads exactly its own files before and
// after serve restarts, and B fails with a reason (lazysnap refuses the
// second TOC for a mounted blob; the ordinary pull it falls back to finds
// that the bytes do not match the digest).
func TestLyingRegistryE2E(t *testing.T) {
	s := startStack(t, "[fetch]\n  no_background = true\n")
	// equal lengths: the files of both images have the same sizes and
	// offsets, so their content files would coincide
	const variantA, variantB = "poison-a", "poison-b"
	_, dirA := buildImages(t, variantA)
	refA, _ := s.pushLayout(t, dirA, "honest", "a")
	if out := s.pull(t, refA); !strings.Contains(out, "2 of 2 layers lazy") {
		t.Fatalf("pull A: %s\nlazysnap log:\n%s", out, s.log())
	}
	s.runSleeper(t, refA, "a")
	readVariant := func(when string) {
		t.Helper()
		out, err := s.ctrd.Ctr(t, "tasks", "exec", "--exec-id", fmt.Sprintf("cat-%d", time.Now().UnixNano()), "a", "/bin/cat", "/data/variant")
		if err != nil || string(out) != variantA {
			t.Fatalf("%s: A's container read /data/variant = %q (%v), want %q\nlazysnap log:\n%s", when, out, err, variantA, s.log())
		}
	}
	readVariant("first read")
	want := dataSums(t)
	if got := s.readSum(t, "a", "/data/big", want.big); got != "ok" {
		t.Fatalf("A reads data/big: %s", got)
	}

	// the lying registry: A's data layer blob pushed honestly, its bytes
	// then replaced by B's data layer, and B's manifest naming A's digest
	// with B's TOC digest
	liar := registry.Start(t, registry.Options{})
	if _, err := registry.WriteHostsConfig(s.hosts, liar.Host, registry.Endpoint{URL: liar.URL()}); err != nil {
		t.Fatal(err)
	}
	pushLayoutTo(t, liar, dirA, "lie", "a")
	_, dirB := buildImages(t, variantB)
	aData := layoutLayers(t, dirA)[1]
	var bData []byte
	lying := rewriteLayout(t, dirB, func(dst string, m *ocispec.Manifest, cfg *ocispec.Image) {
		var err error
		if bData, err = os.ReadFile(filepath.Join(dst, "blobs", "sha256", m.Layers[1].Digest.Encoded())); err != nil {
			t.Fatal(err)
		}
		if m.Layers[1].Annotations["containerd.io/snapshot/stargz/toc.digest"] == aData.Annotations["containerd.io/snapshot/stargz/toc.digest"] {
			t.Fatal("the two images' data layers have the same TOC")
		}
		m.Layers[1].Digest = aData.Digest
		m.Layers[1].Size = int64(len(bData))
		os.WriteFile(filepath.Join(dst, "blobs", "sha256", aData.Digest.Encoded()), bData, 0o644)
	})
	if err := os.WriteFile(liar.BlobPath(aData.Digest.String()), bData, 0o644); err != nil {
		t.Fatal(err)
	}
	refB, _ := pushLayoutTo(t, liar, lying, "lie", "b")

	pullB := func(when string) {
		t.Helper()
		out, err := exec.Command(s.bin, "pull", "--address", s.ctrd.Address(), "--namespace", s.ctrd.Namespace(), "--hosts-dir", s.hosts, refB).CombinedOutput()
		if err == nil {
			// lazily mounted with B's TOC: what B's container reads must
			// still not reach A's
			b, _ := s.ctrd.Ctr(t, "run", "--rm", "--snapshotter", "lazysnap", refB, fmt.Sprintf("b-%d", time.Now().UnixNano()), "/bin/cat", "/data/variant")
			readVariant(when + ", B's container having read " + string(b))
			t.Fatalf("%s: pull of the lying image succeeded:\n%s", when, out)
		}
		rep := s.status(t)
		var reason, msg string
		for _, img := range rep.Images {
			for _, l := range img.Layers {
				if img.Ref == refB && l.Digest == aData.Digest.String() {
					reason, msg = l.FallbackReason, l.Error
				}
			}
		}
		if reason != "verification" || !strings.Contains(msg, "mounted with TOC") {
			t.Fatalf("%s: status shows the lying layer with reason %q (%s), want verification: a second TOC for a mounted blob\npull: %s\nlazysnap log:\n%s", when, reason, msg, out, s.log())
		}
	}
	pullB("before serve's restart")
	readVariant("after B's pull")
	if got := s.readSum(t, "a", "/data/big", want.big); got != "ok" {
		t.Fatalf("A reads data/big after B's pull: %s", got)
	}
	if got := s.readSum(t, "a", "/data/other", want.other); got != "ok" {
		t.Fatalf("A reads data/other after B's pull: %s", got)
	}

	s.stopLazysnap(t)
	s.startLazysnap(t)
	s.waitConnected(t)
	readVariant("after serve's restart")
	pullB("after serve's restart")
	readVariant("after B's second pull")
}

// layoutLayers returns the layer descriptors of the first manifest of an
// OCI layout.
func layoutLayers(t *testing.T, dir string) []ocispec.Descriptor {
	t.Helper()
	var idx ocispec.Index
	readJSON(t, filepath.Join(dir, "index.json"), &idx)
	var m ocispec.Manifest
	readJSON(t, filepath.Join(dir, "blobs", "sha256", idx.Manifests[0].Digest.Encoded()), &m)
	return m.Layers
}
