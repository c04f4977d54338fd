package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/lazysnap/lazysnap/convert"
	"github.com/lazysnap/lazysnap/estargz"
	"github.com/lazysnap/lazysnap/internal/testenv"
	"github.com/lazysnap/lazysnap/internal/testenv/registry"
	"github.com/lazysnap/lazysnap/internal/testimage"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// checkConvertedRef reads repo:tag from reg through the registry API and
// checks it is eStargz: gzip layers with TOC digest annotations, and the
// config's diff_ids the digests of the uncompressed layers.
func checkConvertedRef(t *testing.T, reg *registry.Registry, repo, tag string) {
	t.Helper()
	get := func(kind, ref string) []byte {
		req, _ := http.NewRequestWithContext(t.Context(), http.MethodGet, reg.URL()+"/v2/"+repo+"/"+kind+"/"+ref, nil)
		req.Header.Set("Accept", ocispec.MediaTypeImageManifest)
		if reg.Username != "" {
			req.SetBasicAuth(reg.Username, reg.Password)
		}
		resp, err := reg.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		if err != nil || resp.StatusCode != http.StatusOK {
			t.Fatalf("GET %s/%s/%s: %v %s", repo, kind, ref, err, resp.Status)
		}
		return b
	}
	var m ocispec.Manifest
	var cfg ocispec.Image
	if err := json.Unmarshal(get("manifests", tag), &m); err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(get("blobs", m.Config.Digest.String()), &cfg); err != nil {
		t.Fatal(err)
	}
	if len(m.Layers) != 2 || len(cfg.RootFS.DiffIDs) != 2 {
		t.Fatalf("%s:%s: %d layers, %d diff_ids", repo, tag, len(m.Layers), len(cfg.RootFS.DiffIDs))
	}
	for i, l := range m.Layers {
		if l.MediaType != ocispec.MediaTypeImageLayerGzip || l.Annotations[estargz.TOCJSONDigestAnnotation] == "" {
			t.Fatalf("layer %d: %s %v, want gzip with a TOC digest", i, l.MediaType, l.Annotations)
		}
		if d, err := testimage.DiffID(get("blobs", l.Digest.String())); err != nil || d != cfg.RootFS.DiffIDs[i] {
			t.Fatalf("layer %d: uncompressed %s (%v), config diff_id %s", i, d, err, cfg.RootFS.DiffIDs[i])
		}
	}
}

// TestRegistryConvertE2E converts the busybox image from and to the
// stack's registry with `lazysnap convert`, then pulls the result through
// containerd: its layers mount lazily and a container runs from it.
func TestRegistryConvertE2E(t *testing.T) {
	s := startStack(t, "[fetch]\n  no_background = true\n")
	gzipDir := filepath.Join(t.TempDir(), "gzip")
	if _, err := testimage.Layout(gzipDir, "lazysnap.test/busybox:1", busyboxLayers(t)...); err != nil {
		t.Fatal(err)
	}
	src, _ := s.pushLayout(t, gzipDir, "app", "1")
	const small = "hello from a lazy layer\n"
	runsLazily := func(t *testing.T, ref, id string) {
		t.Helper()
		if out := s.pull(t, ref); !strings.Contains(out, "2 of 2 layers lazy") {
			t.Fatalf("pull %s: %s\nlazysnap log:\n%s", ref, out, s.log())
		}
		if got := s.ctr(t, "run", "--rm", "--snapshotter", "lazysnap", ref, id, "/bin/sh", "-c", "cat /data/small"); got != small {
			t.Fatalf("container printed %q", got)
		}
	}

	t.Run("registry to registry, with the binary", func(t *testing.T) {
		dst := s.reg.Ref("app", "1-esgz")
		start := time.Now()
		out, err := exec.CommandContext(t.Context(), s.bin, "convert", "--hosts-dir", s.hosts, src, dst).CombinedOutput()
		if err != nil {
			t.Fatalf("lazysnap convert: %v\n%s", err, out)
		}
		t.Logf("registry to registry convert took %s:\n%s", time.Since(start).Round(time.Millisecond), out)
		for _, want := range []string{"pulled " + src + ": 4 blobs", "converted 2 of 2 layers", "pushed " + dst + "@sha256:", "4 uploaded"} {
			if !strings.Contains(string(out), want) {
				t.Errorf("output lacks %q:\n%s", want, out)
			}
		}
		checkConvertedRef(t, s.reg, "app", "1-esgz")
		runsLazily(t, dst, "reg2reg")
		// again: everything is in the registry already
		out, err = exec.CommandContext(t.Context(), s.bin, "convert", "--hosts-dir", s.hosts, src, dst).CombinedOutput()
		if err != nil || !strings.Contains(string(out), "0 uploaded (0 bytes), 4 already in the registry") {
			t.Fatalf("second convert: %v\n%s", err, out)
		}
	})

	auth := registry.Start(t, registry.Options{Username: "bob", Password: "s3cret"})
	if _, err := registry.WriteHostsConfig(s.hosts, auth.Host, auth.Endpoint()); err != nil {
		t.Fatal(err)
	}
	dockerConfig := filepath.Join(t.TempDir(), "config.json")
	writeDockerConfig(t, dockerConfig, auth.Host, "bob", "s3cret")
	authStack := *s // pushLayout to the auth registry
	authStack.reg = auth
	authSrc, _ := authStack.pushLayout(t, gzipDir, "private/app", "1")
	readOnly := t.TempDir() // the stack's registry without the push capability
	os.MkdirAll(filepath.Join(readOnly, s.reg.Host), 0o755)
	os.WriteFile(filepath.Join(readOnly, s.reg.Host, "hosts.toml"), []byte(fmt.Sprintf("server = %q\ncapabilities = [\"pull\", \"resolve\"]\n", s.reg.URL())), 0o644)
	recordList := filepath.Join(t.TempDir(), "record.list")

	for _, tc := range []struct {
		name   string
		args   func(tmp string) []string
		code   int
		output []string // in stdout and stderr
		check  func(t *testing.T, tmp string)
	}{
		{"registry to layout", func(tmp string) []string {
			return []string{src, filepath.Join(tmp, "out")}
		}, 0, []string{"pulled " + src}, func(t *testing.T, tmp string) {
			layers, err := convert.LayoutLayers(filepath.Join(tmp, "out"))
			if err != nil || len(layers) != 2 || layers[1].Annotations[estargz.TOCJSONDigestAnnotation] == "" {
				t.Fatalf("converted layout: %v %v", layers, err)
			}
		}},
		{"layout to registry", func(string) []string {
			return []string{gzipDir, "docker://" + s.reg.Ref("app", "from-layout")}
		}, 0, []string{"pushed " + s.reg.Ref("app", "from-layout")}, func(t *testing.T, _ string) {
			checkConvertedRef(t, s.reg, "app", "from-layout")
			runsLazily(t, s.reg.Ref("app", "from-layout"), "layout2reg")
		}},
		{"auth registry with Docker config credentials", func(string) []string {
			return []string{"--docker-config", dockerConfig, authSrc, auth.Ref("private/app", "1-esgz")}
		}, 0, []string{"pushed " + auth.Ref("private/app", "1-esgz")}, func(t *testing.T, _ string) {
			checkConvertedRef(t, auth, "private/app", "1-esgz")
		}},
		{"auth registry without credentials", func(string) []string {
			return []string{"--docker-config", "", authSrc, auth.Ref("private/app", "x")}
		}, 1, []string{"pull failed: " + authSrc}, nil},
		{"push without the push capability", func(string) []string {
			return []string{"--hosts-dir", readOnly, src, s.reg.Ref("app", "ro")}
		}, 1, []string{"push failed: refused", "push capability", "hosts.toml"}, nil},
		{"record from a registry source", func(string) []string {
			return []string{"-record", "-record-list", recordList, src, s.reg.Ref("app", "recorded"), "--", "/bin/cat", "/data/small"}
		}, 0, []string{"pulled " + src, small}, func(t *testing.T, _ string) {
			if list, err := os.ReadFile(recordList); err != nil || !strings.Contains(string(list), "data/small") {
				t.Fatalf("recorded list %q: %v", list, err)
			}
			runsLazily(t, s.reg.Ref("app", "recorded"), "recorded")
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.name == "record from a registry source" {
				testenv.NeedRoot(t, "chroot, fanotify")
			}
			tmp := t.TempDir()
			var stdout, stderr bytes.Buffer
			code := run(append([]string{"convert", "--hosts-dir", s.hosts}, tc.args(tmp)...), &stdout, &stderr)
			all := stdout.String() + stderr.String()
			if code != tc.code {
				t.Fatalf("exit %d, want %d\n%s", code, tc.code, all)
			}
			for _, want := range tc.output {
				if !strings.Contains(all, want) {
					t.Errorf("output lacks %q:\n%s", want, all)
				}
			}
			if tc.check != nil {
				tc.check(t, tmp)
			}
		})
	}
}
