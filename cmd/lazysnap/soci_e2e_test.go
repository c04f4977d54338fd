package main

import (
	"encoding/json"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/lazysnap/lazysnap/convert"
	"github.com/lazysnap/lazysnap/internal/testenv/socipeer"
	"github.com/lazysnap/lazysnap/internal/testimage"
	"github.com/lazysnap/lazysnap/ops"
	"github.com/lazysnap/lazysnap/soci"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// TestSociIndexE2E: an unmodified gzip image given a SOCI v2 index by
// `lazysnap index` (registry to registry, only the manifests and zTOCs
// uploaded) runs through containerd with both layers mounted lazily
// (format soci in status), its files read right; a layer whose blob the
// registry serves with a span changed answers EIO for that span's files,
// with the span verification failure as the layer's error in status. An
// image indexed by soci's own library (soci-peer, as `soci convert` does)
// mounts lazily the same way.
func TestSociIndexE2E(t *testing.T) {
	s := startStack(t, "[fetch]\n  no_background = true\n")
	index := func(t *testing.T, src, dst string) string {
		t.Helper()
		out, err := exec.CommandContext(t.Context(), s.bin, "index", "--hosts-dir", s.hosts, src, dst).CombinedOutput()
		if err != nil {
			t.Fatalf("lazysnap index: %v\n%s", err, out)
		}
		return string(out)
	}
	push := func(t *testing.T, repo string, variant ...string) (string, [][]byte, string) {
		t.Helper()
		layers := busyboxLayers(t, variant...)
		dir := filepath.Join(t.TempDir(), "gzip")
		if _, err := testimage.Layout(dir, "lazysnap.test/"+repo+":1", layers...); err != nil {
			t.Fatal(err)
		}
		ref, _ := s.pushLayout(t, dir, repo, "1")
		return ref, layers, dir
	}
	sociLayers := func(t *testing.T, ref string) []ops.Layer {
		t.Helper()
		var ls []ops.Layer
		for _, l := range imageLayers(s.status(t), ref) {
			if l.Format != "soci" {
				t.Fatalf("layer %s of %s: state %s, format %q, want soci", l.Digest, ref, l.State, l.Format)
			}
			ls = append(ls, l)
		}
		return ls
	}

	// runsLazily pulls ref (both layers lazy), runs sh -c script in it
	// (its output must start with want) and checks status names both
	// layers soci
	runsLazily := func(t *testing.T, ref, script, want string) {
		t.Helper()
		if out := s.pull(t, ref); !strings.Contains(out, "2 of 2 layers lazy") {
			t.Fatalf("pull %s: %s\nlazysnap log:\n%s", ref, out, s.log())
		}
		id := strings.NewReplacer(":", "-", "/", "-", ".", "-").Replace(ref)
		if got := s.ctr(t, "run", "--rm", "--snapshotter", "lazysnap", ref, id, "/bin/sh", "-c", script); !strings.HasPrefix(got, want) {
			t.Fatalf("container printed %q, want %q", got, want)
		}
		if ls := sociLayers(t, ref); len(ls) != 2 {
			t.Fatalf("%d lazy layers of %s in status, want 2", len(ls), ref)
		}
	}

	t.Run("indexed by lazysnap index", func(t *testing.T) {
		src, layers, _ := push(t, "soci")
		dst := s.reg.Ref("soci", "1-soci")
		out := index(t, src, dst)
		for _, want := range []string{"indexed 2 of 2 layers", "pushed " + dst, "3 already in the registry"} {
			if !strings.Contains(out, want) {
				t.Errorf("lazysnap index output lacks %q:\n%s", want, out)
			}
		}
		if n := packedZtocs(t, s.reg.URL(), "soci", "1-soci"); n != 2 {
			t.Errorf("the registry holds the packed copies of %d of the 2 zTOCs", n)
		}
		runsLazily(t, dst, "cat /data/small; sha256sum /data/other", "hello from a lazy layer\n"+sha256Of(t, layers[1], "data/other"))
	})

	t.Run("indexed by soci", func(t *testing.T) {
		peer := socipeer.Binary(t)
		layers := busyboxLayers(t, "soci-peer")
		dir := filepath.Join(t.TempDir(), "gzip")
		if _, err := testimage.Layout(dir, "lazysnap.test/soci-peer:1", layers...); err != nil {
			t.Fatal(err)
		}
		if out, err := exec.CommandContext(t.Context(), peer, "convert", dir).CombinedOutput(); err != nil {
			t.Fatalf("soci-peer convert: %v\n%s", err, out)
		}
		hosts, none := s.hosts, ""
		ref := s.reg.Ref("soci-peer", "1")
		if _, err := convert.Push(t.Context(), dir, ref, convert.Options{Resolver: (&registryFlags{hostsDir: &hosts, dockerConfig: &none, user: &none}).resolver(t.Context())}); err != nil {
			t.Fatal(err)
		}
		runsLazily(t, ref, "cat /data/small /data/variant; sha256sum /data/big", "hello from a lazy layer\nsoci-peer"+sha256Of(t, layers[1], "data/big"))
	})

	t.Run("tampered span", func(t *testing.T) {
		src, _, dir := push(t, "soci-bad", "tampered")
		dst := s.reg.Ref("soci-bad", "1-soci")
		index(t, src, dst)
		// the data layer as the registry serves it: a byte of its first
		// span (which holds /data/small) changed
		dataDigest := layoutLayers(t, dir)[1].Digest.String()
		p := s.reg.BlobPath(dataDigest)
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		b[200] ^= 0xff
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
		if out := s.pull(t, dst); !strings.Contains(out, "2 of 2 layers lazy") {
			t.Fatalf("pull %s: %s\nlazysnap log:\n%s", dst, out, s.log())
		}
		out, err := s.ctrd.Ctr(t, "run", "--rm", "--snapshotter", "lazysnap", dst, "soci-bad", "/bin/cat", "/data/small")
		if err == nil || !strings.Contains(string(out), "I/O error") && !strings.Contains(string(out), "Input/output error") {
			t.Fatalf("reading a file of the tampered span: %v\n%s", err, out)
		}
		var reason string
		for _, l := range sociLayers(t, dst) {
			if l.Digest == dataDigest {
				reason = l.Error
			}
		}
		if !strings.Contains(reason, "soci: verification failed") || !strings.Contains(reason, "the zTOC says") {
			t.Fatalf("status error of the tampered layer: %q, want the span verification failure", reason)
		}
	})
}

// packedZtocs counts the zTOCs of the SOCI v2 index of repo:tag (an
// image index) whose packed copy the registry at base holds.
func packedZtocs(t *testing.T, base, repo, tag string) int {
	t.Helper()
	get := func(path, accept string, v any) int {
		req, _ := http.NewRequestWithContext(t.Context(), http.MethodGet, base+"/v2/"+repo+path, nil)
		req.Header.Set("Accept", accept)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		if v != nil && resp.StatusCode == http.StatusOK {
			if err := json.NewDecoder(resp.Body).Decode(v); err != nil {
				t.Fatal(err)
			}
		}
		return resp.StatusCode
	}
	var top ocispec.Index
	if code := get("/manifests/"+tag, ocispec.MediaTypeImageIndex, &top); code != http.StatusOK {
		t.Fatalf("%s:%s: %d", repo, tag, code)
	}
	n := 0
	for _, d := range top.Manifests {
		if d.ArtifactType != soci.ArtifactTypeV2 {
			continue
		}
		var m ocispec.Manifest
		if code := get("/manifests/"+d.Digest.String(), ocispec.MediaTypeImageManifest, &m); code != http.StatusOK {
			t.Fatalf("SOCI index %s: %d", d.Digest, code)
		}
		for _, l := range m.Layers {
			if pd, _, ok := soci.Packed(l.Annotations); ok && get("/blobs/"+pd.String(), "*/*", nil) == http.StatusOK {
				n++
			}
		}
	}
	return n
}
