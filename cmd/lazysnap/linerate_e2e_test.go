package main

// End-to-end tests of the line-rate pull (issue 24): an unindexed gzip
// image pulled through containerd and lazysnap, whose layers lazysnap
// pulls itself (containerd never fetches their blobs), and what a broken
// registry or a full disk leaves behind: no committed snapshot of the
// layer, and the reason in the pull's error and in lazysnap status.

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/lazysnap/lazysnap/config"
	"github.com/lazysnap/lazysnap/internal/testenv/registry"
	"github.com/lazysnap/lazysnap/internal/testimage"
	"github.com/lazysnap/lazysnap/ops"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// pushGzip pushes the busybox image of a variant as built (gzip, no
// index) and returns its reference and manifest.
func (s *stack) pushGzip(t *testing.T, variant string) (string, ocispec.Manifest) {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "gzip")
	if _, err := testimage.Layout(dir, "lazysnap.test/busybox:1", busyboxLayers(t, variant)...); err != nil {
		t.Fatal(err)
	}
	ref, _ := s.pushLayout(t, dir, "linerate", strings.ReplaceAll(variant, " ", "-"))
	var idx ocispec.Index
	var m ocispec.Manifest
	readJSON(t, filepath.Join(dir, "index.json"), &idx)
	readJSON(t, filepath.Join(dir, "blobs", "sha256", idx.Manifests[0].Digest.Encoded()), &m)
	return ref, m
}

// tryPull runs `lazysnap pull ref` and returns its output and error.
func (s *stack) tryPull(t *testing.T, ref string) (string, error) {
	t.Helper()
	cmd := exec.Command(s.bin, "pull", "--address", s.ctrd.Address(), "--namespace", s.ctrd.Namespace(), "--hosts-dir", s.hosts, "--progress", "plain",
		"--status", filepath.Join(s.dir, config.StatusSocketName), ref)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// hasContent reports whether containerd's content store holds blob dg.
func (s *stack) hasContent(t *testing.T, dg string) bool {
	t.Helper()
	for _, line := range strings.Split(s.ctr(t, "content", "ls"), "\n") {
		if f := strings.Fields(line); len(f) > 0 && f[0] == dg {
			return true
		}
	}
	return false
}

// snapshotKinds lists lazysnap's snapshots: name → kind.
func (s *stack) snapshotKinds(t *testing.T) map[string]string {
	t.Helper()
	out := s.ctr(t, "snapshots", "--snapshotter", "lazysnap", "ls")
	kinds := map[string]string{}
	for _, line := range strings.Split(out, "\n")[1:] {
		if f := strings.Fields(line); len(f) >= 2 {
			kinds[f[0]] = f[len(f)-1]
		}
	}
	return kinds
}

// layerOf finds a layer of ref in the report.
func layerOf(rep ops.Report, ref, dg string) (ops.Layer, bool) {
	for _, img := range rep.Images {
		for _, l := range img.Layers {
			if img.Ref == ref && l.Digest == dg {
				return l, true
			}
		}
	}
	return ops.Layer{}, false
}

// TestLineRatePull: an unindexed gzip image is pulled by lazysnap at line
// rate (status says so; containerd's content store never gets the layer
// blobs) and runs; removed and pulled again, its layers mount lazily
// through the zTOCs the first pull kept.
func TestLineRatePull(t *testing.T) {
	eachContainerd(t, "", func(t *testing.T, s *stack, _ int) { testLineRatePull(t, s) })
}

func testLineRatePull(t *testing.T, s *stack) {
	ref, m := s.pushGzip(t, "line rate")
	// each blob request held a while: the pull shows the bytes arriving
	s.wan.SetFaults(registry.Faults{Delay: 700 * time.Millisecond})
	out, err := s.tryPull(t, ref)
	s.wan.SetFaults(registry.Faults{})
	if err != nil || !strings.Contains(out, "0 of 2 layers lazy, 2 pulled at line rate") || !strings.Contains(out, "not lazy, pulled at line rate") ||
		!regexp.MustCompile(`layer 1 .*not lazy, pulling at line rate [0-9.]+ [KM]i?B / [0-9.]+ MiB \([0-9]+%\)`).MatchString(out) {
		t.Fatalf("pull: %v\n%s", err, out)
	}
	if got := s.ctr(t, "run", "--rm", "--snapshotter", "lazysnap", ref, "lr1", "/bin/sh", "-c", "cat /data/small; sha256sum /data/big | head -c 64"); got != "hello from a lazy layer\n"+sha256Of(t, busyboxLayers(t, "line rate")[1], "data/big") {
		t.Fatalf("container printed %q", got)
	}
	rep := s.status(t)
	for _, l := range m.Layers {
		if s.hasContent(t, l.Digest.String()) {
			t.Errorf("containerd fetched layer %s into its content store", l.Digest)
		}
		sl, ok := layerOf(rep, ref, l.Digest.String())
		if !ok || sl.Path != ops.PathLineRate || sl.State != ops.StatePulled || sl.FetchedBytes != l.Size || sl.Ztoc != "kept" || !strings.Contains(sl.NotLazy, "no lazily loadable format") {
			t.Errorf("status of layer %s: %+v, want pulled at line rate, all %d bytes, zTOC kept", l.Digest, sl, l.Size)
		}
		// the data layer was downloaded while the busybox layer was pulled
		if want := l.Digest == m.Layers[1].Digest; sl.Ahead != want {
			t.Errorf("layer %s downloaded ahead: %v, want %v", l.Digest, sl.Ahead, want)
		}
	}
	if rep.Snapshotter == nil || rep.Snapshotter.LineRatePulls != 2 {
		t.Errorf("snapshotter status %+v, want 2 line-rate pulls", rep.Snapshotter)
	}

	// removed, and pulled again: lazy, through the local zTOCs
	s.ctr(t, "images", "rm", "--sync", ref)
	for name, kind := range s.snapshotKinds(t) {
		t.Errorf("snapshot %s (%s) left after the image was removed", name, kind)
	}
	if out := s.pull(t, ref); !strings.Contains(out, "2 of 2 layers lazy") {
		t.Fatalf("second pull: %s\n%s", out, s.log())
	}
	if got := s.ctr(t, "run", "--rm", "--snapshotter", "lazysnap", ref, "lr2", "/bin/cat", "/data/small"); got != "hello from a lazy layer\n" {
		t.Fatalf("container printed %q", got)
	}
	rep = s.status(t)
	for _, l := range m.Layers {
		if sl, ok := layerOf(rep, ref, l.Digest.String()); !ok || sl.Path != ops.PathLazy || sl.Format != "soci (local zTOC)" {
			t.Errorf("layer %s after the second pull: %+v, want lazy through its local zTOC", l.Digest, sl)
		}
	}
}

// TestLineRatePullFails: a corrupted blob, a blob that is not the one its
// digest names, a registry that resets the stream at the same place
// whatever it is asked, and a full disk each fail the pull with the
// reason, leave no snapshot of the layer (committed or not), and show in
// lazysnap status as a failed pull.
func TestLineRatePullFails(t *testing.T) {
	s := startStack(t, "[fetch]\n  request_timeout = \"5s\"\n")
	full := startStack(t, "")
	// the second stack's snapshots live on a disk of 6 MiB: the busybox
	// layer fits, the data layer (28 MiB) does not
	snaps := filepath.Join(full.dir, "root", "snapshotter", "snapshots")
	if err := syscall.Mount("tmpfs", snaps, "tmpfs", 0, "size=6m,mode=700"); err != nil {
		t.Fatalf("tmpfs: %v", err)
	}
	t.Cleanup(func() { syscall.Unmount(snaps, syscall.MNT_DETACH) })

	damage := func(at func(blob []byte) []int) func(t *testing.T, s *stack, m ocispec.Manifest) {
		return func(t *testing.T, s *stack, m ocispec.Manifest) {
			p := s.reg.BlobPath(m.Layers[1].Digest.String())
			b, err := os.ReadFile(p)
			if err != nil {
				t.Fatal(err)
			}
			for _, i := range at(b) {
				b[i] ^= 0xff
			}
			if err := os.WriteFile(p, b, 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	for _, tc := range []struct {
		name    string
		s       *stack
		breakIt func(t *testing.T, s *stack, m ocispec.Manifest)
		want    string
	}{
		{"corrupted blob", s, damage(func(b []byte) []int { return []int{len(b) / 2, len(b)/2 + 1000} }), "corrupt layer"},
		// the gzip header's mtime: the blob inflates as before
		{"another blob under the digest", s, damage(func([]byte) []int { return []int{5} }), "digest mismatch"},
		{"registry resets mid-stream", s, func(t *testing.T, s *stack, m ocispec.Manifest) {
			s.wan.SetFaults(registry.Faults{ResetAtOffset: m.Layers[1].Size / 2})
			t.Cleanup(func() { s.wan.SetFaults(registry.Faults{}) })
		}, "fetch failed"},
		{"full disk", full, func(*testing.T, *stack, ocispec.Manifest) {}, "no space left on device"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ref, m := tc.s.pushGzip(t, tc.name)
			tc.breakIt(t, tc.s, m)
			out, err := tc.s.tryPull(t, ref)
			if err == nil || !strings.Contains(out, "lazysnap pulled layer "+m.Layers[1].Digest.String()) || !strings.Contains(out, tc.want) {
				t.Fatalf("pull: %v\n%s\nwant it to fail saying %q", err, out, tc.want)
			}
			// nothing of the data layer is left, committed or active; the
			// busybox layer's committed snapshot may be (containerd's
			// garbage collection removes it once the failed pull's lease
			// is gone)
			kinds := tc.s.snapshotKinds(t)
			if len(kinds) > 1 {
				t.Errorf("snapshots after the failed pull: %v, want at most the first layer's", kinds)
			}
			for name, kind := range kinds {
				if kind != "Committed" {
					t.Errorf("snapshot %s is %s", name, kind)
				}
			}
			sl, ok := layerOf(tc.s.status(t), ref, m.Layers[1].Digest.String())
			if !ok || sl.Path != ops.PathFailed || !strings.Contains(sl.Error, tc.want) {
				t.Errorf("status of the data layer: %+v, want a failed pull saying %q", sl, tc.want)
			}
			if tc.s.hasContent(t, m.Layers[1].Digest.String()) {
				t.Errorf("containerd fetched the layer itself")
			}
			fmt.Fprintln(os.Stderr) // keep the pull's output apart in -v logs
		})
	}
}

// TestLineRateContentStore: with [pull] content_store, the blobs lazysnap
// pulls are in containerd 2's content store too (ctr images export then
// works); containerd 1.6 does not name the namespace to a proxy
// snapshotter, and status says the blobs were not stored and why.
func TestLineRateContentStore(t *testing.T) {
	eachContainerd(t, "", func(t *testing.T, s *stack, major int) {
		stored := major >= 2
		// containerd's address is known once it runs: serve and its
		// manager again, with the content store configured
		s.stopLazysnap(t)
		s.stopManager(t, syscall.SIGTERM)
		cfgPath := filepath.Join(s.dir, "lazysnap.toml")
		cfg, err := os.ReadFile(cfgPath)
		if err != nil {
			t.Fatal(err)
		}
		cfg = append(cfg, fmt.Sprintf("[pull]\n  content_store = true\n  containerd_address = %q\n", s.ctrd.Address())...)
		if err := os.WriteFile(cfgPath, cfg, 0o644); err != nil {
			t.Fatal(err)
		}
		s.startLazysnap(t)

		ref, m := s.pushGzip(t, "content store")
		if out := s.pull(t, ref); !strings.Contains(out, "2 pulled at line rate") {
			t.Fatalf("pull: %s", out)
		}
		rep := s.status(t)
		for _, l := range m.Layers {
			sl, _ := layerOf(rep, ref, l.Digest.String())
			if got := s.hasContent(t, l.Digest.String()); got != stored {
				t.Errorf("layer %s in containerd's content store: %v, want %v (status: %q)", l.Digest, got, stored, sl.Stored)
			}
			if stored && sl.Stored != "stored" || !stored && !strings.Contains(sl.Stored, "namespace") {
				t.Errorf("status of layer %s: stored %q", l.Digest, sl.Stored)
			}
		}
		if stored {
			s.ctr(t, "images", "export", filepath.Join(t.TempDir(), "image.tar"), ref)
		}
		if got := s.ctr(t, "run", "--rm", "--snapshotter", "lazysnap", ref, "cs1", "/bin/cat", "/data/small"); got != "hello from a lazy layer\n" {
			t.Fatalf("container printed %q", got)
		}
	})
}
