package convert_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/containerd/containerd/v2/core/remotes"
	"github.com/containerd/containerd/v2/core/remotes/docker"
	"github.com/containerd/containerd/v2/core/remotes/docker/config"
	"github.com/lazysnap/lazysnap/convert"
	"github.com/lazysnap/lazysnap/estargz"
	"github.com/lazysnap/lazysnap/internal/testenv/registry"
	"github.com/lazysnap/lazysnap/internal/testimage"
	"github.com/lazysnap/lazysnap/internal/testtar"
	"github.com/opencontainers/go-digest"
	specs "github.com/opencontainers/image-spec/specs-go"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

func TestParseLocation(t *testing.T) {
	for _, tc := range []struct {
		name, in  string
		ref, path string
		err       error
	}{
		{name: "host with port", in: "127.0.0.1:5000/app:1", ref: "127.0.0.1:5000/app:1"},
		{name: "docker hub", in: "docker.io/library/x:y", ref: "docker.io/library/x:y"},
		{name: "docker hub official image", in: "docker.io/busybox", ref: "docker.io/library/busybox:latest"},
		{name: "no tag", in: "registry.example/team/app", ref: "registry.example/team/app:latest"},
		{name: "localhost", in: "localhost/app:2", ref: "localhost/app:2"},
		{name: "digest", in: "registry.example/app@sha256:" + strings.Repeat("a", 64), ref: "registry.example/app@sha256:" + strings.Repeat("a", 64)},
		{name: "prefixed reference", in: "docker://registry/app:1", ref: "registry/app:1"},
		{name: "prefixed path", in: "oci:registry.example/app", path: "registry.example/app"},
		{name: "relative dir", in: "out", path: "out"},
		{name: "nested relative dir", in: "images/app", path: "images/app"},
		{name: "dot-slash path", in: "./registry.example/app:1", path: "./registry.example/app:1"},
		{name: "absolute path", in: "/var/tmp/img.tar", path: "/var/tmp/img.tar"},
		{name: "archive", in: "app.tar", path: "app.tar"},
		{name: "short name is a path", in: "app:1", path: "app:1"},
		{name: "reference without repository", in: "docker://registry.example", err: convert.ErrRef},
		{name: "bad digest", in: "registry.example/app@sha256:abc", err: convert.ErrRef},
		{name: "empty prefixed path", in: "oci:", err: convert.ErrLayout},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := convert.ParseLocation(tc.in)
			if tc.err != nil {
				if !errors.Is(err, tc.err) {
					t.Fatalf("ParseLocation(%q) = %+v, %v; want %v", tc.in, got, err, tc.err)
				}
				return
			}
			if err != nil || got.Ref != tc.ref || got.Path != tc.path {
				t.Fatalf("ParseLocation(%q) = %+v, %v; want ref %q path %q", tc.in, got, err, tc.ref, tc.path)
			}
		})
	}
}

// regEnv is a registry with a hosts directory and a resolver over it.
type regEnv struct {
	reg   *registry.Registry
	hosts string
}

func startRegistry(t *testing.T, opts registry.Options) *regEnv {
	t.Helper()
	e := &regEnv{reg: registry.Start(t, opts), hosts: t.TempDir()}
	if _, err := registry.WriteHostsConfig(e.hosts, e.reg.Host, e.reg.Endpoint()); err != nil {
		t.Fatal(err)
	}
	return e
}

// resolver reaches the registry with the given credentials.
func (e *regEnv) resolver(user, password string) remotes.Resolver {
	return docker.NewResolver(docker.ResolverOptions{Hosts: config.ConfigureHosts(context.Background(), config.HostOptions{
		HostDir:     config.HostDirFromRoot(e.hosts),
		Credentials: func(string) (string, string, error) { return user, password, nil },
	})})
}

// pushImage pushes a plain (gzip) image built by testimage with the
// registry's own HTTP pusher, and returns its reference.
func (e *regEnv) pushImage(t *testing.T, repo, tag string, layers ...[]byte) string {
	t.Helper()
	img, err := testimage.New("lazysnap.test/x:1", layers...)
	if err != nil {
		t.Fatal(err)
	}
	p := e.reg.Pusher()
	for d, b := range img.Blobs {
		if d == img.Manifest.Digest {
			continue
		}
		if _, err := p.PushBlob(t.Context(), repo, b); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := p.PushManifest(t.Context(), repo, tag, img.Manifest.MediaType, img.Blobs[img.Manifest.Digest]); err != nil {
		t.Fatal(err)
	}
	return e.reg.Ref(repo, tag)
}

// get reads a manifest or blob through the registry API.
func (e *regEnv) get(t *testing.T, repo, kind, ref string) []byte {
	t.Helper()
	req, _ := http.NewRequestWithContext(t.Context(), http.MethodGet, e.reg.URL()+"/v2/"+repo+"/"+kind+"/"+ref, nil)
	req.Header.Set("Accept", ocispec.MediaTypeImageIndex+", "+ocispec.MediaTypeImageManifest)
	if e.reg.Username != "" {
		req.SetBasicAuth(e.reg.Username, e.reg.Password)
	}
	resp, err := e.reg.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s %s: %v %s", kind, ref, err, resp.Status)
	}
	return b
}

// checkRegistryImage checks that repo:tag is an eStargz image: every
// manifest (of an index too) passes checkLayers. It returns the number of
// manifests.
func (e *regEnv) checkRegistryImage(t *testing.T, repo, tag string) int {
	t.Helper()
	var probe struct {
		MediaType string               `json:"mediaType"`
		Manifests []ocispec.Descriptor `json:"manifests"`
	}
	b := e.get(t, repo, "manifests", tag)
	if err := json.Unmarshal(b, &probe); err != nil {
		t.Fatal(err)
	}
	refs := []string{tag}
	if probe.MediaType == ocispec.MediaTypeImageIndex {
		refs = refs[:0]
		for _, m := range probe.Manifests {
			refs = append(refs, m.Digest.String())
		}
	}
	for _, ref := range refs {
		var m ocispec.Manifest
		var cfg ocispec.Image
		if err := json.Unmarshal(e.get(t, repo, "manifests", ref), &m); err != nil {
			t.Fatal(err)
		}
		if err := json.Unmarshal(e.get(t, repo, "blobs", m.Config.Digest.String()), &cfg); err != nil {
			t.Fatal(err)
		}
		checkLayers(t, m, cfg, func(d digest.Digest) []byte { return e.get(t, repo, "blobs", d.String()) })
	}
	return len(refs)
}

// checkLayers checks that every layer is eStargz: gzip media type, the
// blob matches its descriptor, the TOC digest annotation opens it, and the
// config's diff_id is the digest of the uncompressed tar.
func checkLayers(t *testing.T, m ocispec.Manifest, cfg ocispec.Image, blob func(digest.Digest) []byte) {
	t.Helper()
	if len(m.Layers) == 0 || len(cfg.RootFS.DiffIDs) != len(m.Layers) {
		t.Fatalf("%d layers, %d diff_ids", len(m.Layers), len(cfg.RootFS.DiffIDs))
	}
	for i, l := range m.Layers {
		b := blob(l.Digest)
		if l.MediaType != ocispec.MediaTypeImageLayerGzip || digest.FromBytes(b) != l.Digest || int64(len(b)) != l.Size {
			t.Fatalf("layer %d (%s) does not match its descriptor", i, l.MediaType)
		}
		toc := digest.Digest(l.Annotations[estargz.TOCJSONDigestAnnotation])
		if _, err := estargz.Open(io.NewSectionReader(bytes.NewReader(b), 0, l.Size), estargz.WithTOCDigest(toc)); err != nil {
			t.Fatalf("layer %d with TOC digest %q: %v", i, toc, err)
		}
		if d, err := testimage.DiffID(b); err != nil || d != cfg.RootFS.DiffIDs[i] {
			t.Fatalf("layer %d: uncompressed %s (%v), diff_id %s", i, d, err, cfg.RootFS.DiffIDs[i])
		}
	}
}

// indexLayout writes a layout whose index.json names an image index of
// two platforms (different layers each).
func indexLayout(t *testing.T, dir string) {
	t.Helper()
	var idx ocispec.Index
	idx.SchemaVersion, idx.MediaType = 2, ocispec.MediaTypeImageIndex
	for i, arch := range []string{"amd64", "arm64"} {
		img, err := testimage.New("lazysnap.test/multi:1", testtar.Synthetic(64<<10*(i+1)))
		if err != nil {
			t.Fatal(err)
		}
		if err := img.WriteLayout(dir); err != nil {
			t.Fatal(err)
		}
		md := img.Manifest
		md.Annotations, md.Platform = nil, &ocispec.Platform{OS: "linux", Architecture: arch}
		idx.Manifests = append(idx.Manifests, md)
	}
	b, _ := json.Marshal(idx)
	if err := os.WriteFile(filepath.Join(dir, "blobs", "sha256", digest.FromBytes(b).Encoded()), b, 0o644); err != nil {
		t.Fatal(err)
	}
	top, _ := json.Marshal(ocispec.Index{Versioned: specs.Versioned{SchemaVersion: 2}, Manifests: []ocispec.Descriptor{{
		MediaType: ocispec.MediaTypeImageIndex, Digest: digest.FromBytes(b), Size: int64(len(b)),
	}}})
	if err := os.WriteFile(filepath.Join(dir, "index.json"), top, 0o644); err != nil {
		t.Fatal(err)
	}
}

// TestImageAtRegistry converts between registries and layouts with the
// real registry.
func TestImageAtRegistry(t *testing.T) {
	e := startRegistry(t, registry.Options{})
	layers := [][]byte{testtar.Synthetic(2 << 20), testtar.Synthetic(16 << 10)}
	src := e.pushImage(t, "app", "1", layers...)
	for _, tc := range []struct {
		name  string
		setup func(t *testing.T, tmp string) (src, dst convert.Location)
		check func(t *testing.T, tmp string, rep *convert.Report)
	}{
		{"registry to registry", func(t *testing.T, tmp string) (convert.Location, convert.Location) {
			return convert.Location{Ref: src}, convert.Location{Ref: e.reg.Ref("app", "1-esgz")}
		}, func(t *testing.T, tmp string, rep *convert.Report) {
			if rep.Pull == nil || rep.Pull.Blobs != 4 || rep.Push == nil || rep.Push.Uploaded != 4 || rep.Push.Existing != 0 {
				t.Fatalf("pull %+v push %+v: want 4 blobs each way", rep.Pull, rep.Push)
			}
			if n := e.checkRegistryImage(t, "app", "1-esgz"); n != 1 {
				t.Fatalf("%d manifests", n)
			}
		}},
		{"registry to layout", func(t *testing.T, tmp string) (convert.Location, convert.Location) {
			return convert.Location{Ref: src}, convert.Location{Path: filepath.Join(tmp, "out")}
		}, func(t *testing.T, tmp string, rep *convert.Report) {
			dir := filepath.Join(tmp, "out")
			var idx ocispec.Index
			b, err := os.ReadFile(filepath.Join(dir, "index.json"))
			if err != nil || json.Unmarshal(b, &idx) != nil || len(idx.Manifests) != 1 {
				t.Fatalf("index.json: %v %s", err, b)
			}
			if a := idx.Manifests[0].Annotations; a["io.containerd.image.name"] != src || a[ocispec.AnnotationRefName] != "1" {
				t.Errorf("index.json annotations %v", a)
			}
			var m ocispec.Manifest
			var cfg ocispec.Image
			readJSON(t, dir, idx.Manifests[0], &m)
			readJSON(t, dir, m.Config, &cfg)
			checkLayers(t, m, cfg, func(d digest.Digest) []byte {
				b, _ := os.ReadFile(filepath.Join(dir, "blobs", "sha256", d.Encoded()))
				return b
			})
			if _, err := os.Stat(filepath.Join(dir, "ingest")); err == nil {
				t.Errorf("the layout has the content store's ingest directory")
			}
		}},
		{"layout to registry", func(t *testing.T, tmp string) (convert.Location, convert.Location) {
			dir := filepath.Join(tmp, "src")
			if _, err := testimage.Layout(dir, "lazysnap.test/local:1", layers[1]); err != nil {
				t.Fatal(err)
			}
			return convert.Location{Path: dir}, convert.Location{Ref: e.reg.Ref("local", "esgz")}
		}, func(t *testing.T, tmp string, rep *convert.Report) {
			if rep.Pull != nil || rep.Push == nil || !strings.HasPrefix(rep.Push.Ref, e.reg.Ref("local", "esgz")+"@sha256:") {
				t.Fatalf("pull %+v push %+v", rep.Pull, rep.Push)
			}
			e.checkRegistryImage(t, "local", "esgz")
		}},
		{"index of two platforms, registry to registry", func(t *testing.T, tmp string) (convert.Location, convert.Location) {
			dir := filepath.Join(tmp, "multi")
			indexLayout(t, dir)
			// the plain index goes in with Push, untouched
			if _, err := convert.Push(t.Context(), dir, e.reg.Ref("multi", "1"), convert.Options{Resolver: e.resolver("", "")}); err != nil {
				t.Fatal(err)
			}
			return convert.Location{Ref: e.reg.Ref("multi", "1")}, convert.Location{Ref: e.reg.Ref("multi", "1-esgz")}
		}, func(t *testing.T, tmp string, rep *convert.Report) {
			if rep.Manifests != 2 || len(rep.Layers) != 2 {
				t.Fatalf("%d manifests, %d layers converted", rep.Manifests, len(rep.Layers))
			}
			if n := e.checkRegistryImage(t, "multi", "1-esgz"); n != 2 {
				t.Fatalf("the converted index has %d manifests", n)
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tmp, work := t.TempDir(), t.TempDir()
			s, d := tc.setup(t, tmp)
			rep, err := convert.ImageAt(t.Context(), s, d, convert.Options{Resolver: e.resolver("", ""), TempDir: work})
			if err != nil {
				t.Fatalf("ImageAt(%s, %s): %v", s, d, err)
			}
			tc.check(t, tmp, rep)
			if ents, _ := os.ReadDir(work); len(ents) != 0 {
				t.Errorf("temporary files left: %v", ents)
			}
		})
	}

	t.Run("converting again uploads nothing", func(t *testing.T) {
		rep, err := convert.ImageAt(t.Context(), convert.Location{Ref: src}, convert.Location{Ref: e.reg.Ref("app", "1-esgz")}, convert.Options{Resolver: e.resolver("", "")})
		if err != nil {
			t.Fatal(err)
		}
		if rep.Push.Uploaded != 0 || rep.Push.Existing != 4 {
			t.Fatalf("push %+v: want every blob and the manifest found in the registry", rep.Push)
		}
	})
}

// TestImageAtRegistryErrors: each failure has its sentinel, names the
// reference, and leaves no temporary files.
func TestImageAtRegistryErrors(t *testing.T) {
	e := startRegistry(t, registry.Options{})
	src := e.pushImage(t, "app", "1", testtar.Synthetic(64<<10))
	auth := startRegistry(t, registry.Options{Username: "alice", Password: "secret"})
	authSrc := auth.pushImage(t, "private", "1", testtar.Synthetic(64<<10))
	// a hosts.toml whose server may pull but not push
	readOnly := t.TempDir()
	os.MkdirAll(filepath.Join(readOnly, e.reg.Host), 0o755)
	os.WriteFile(filepath.Join(readOnly, e.reg.Host, "hosts.toml"), []byte(fmt.Sprintf("server = %q\ncapabilities = [\"pull\", \"resolve\"]\n", e.reg.URL())), 0o644)
	roResolver := docker.NewResolver(docker.ResolverOptions{Hosts: config.ConfigureHosts(context.Background(), config.HostOptions{HostDir: config.HostDirFromRoot(readOnly)})})
	canceled, cancel := context.WithCancel(t.Context())
	cancel()
	for _, tc := range []struct {
		name     string
		ctx      context.Context
		resolver remotes.Resolver
		src, dst string
		want     []error
		mention  string
	}{
		{"missing source", t.Context(), e.resolver("", ""), e.reg.Ref("app", "nope"), e.reg.Ref("app", "x"), []error{convert.ErrPull}, e.reg.Ref("app", "nope")},
		{"push without the push capability", t.Context(), roResolver, src, e.reg.Ref("app", "ro"), []error{convert.ErrPush, convert.ErrPushDenied}, "push capability"},
		{"push without credentials", t.Context(), e.resolver("", ""), src, auth.reg.Ref("private", "x"), []error{convert.ErrPush, convert.ErrPushDenied}, "refused"},
		{"pull without credentials", t.Context(), auth.resolver("", ""), authSrc, auth.reg.Ref("private", "x"), []error{convert.ErrPull}, authSrc},
		{"pull with a wrong password", t.Context(), auth.resolver("alice", "wrong"), authSrc, auth.reg.Ref("private", "x"), []error{convert.ErrPull}, authSrc},
		{"destination with a digest", t.Context(), e.resolver("", ""), src, e.reg.Ref("app", "x") + "@sha256:" + strings.Repeat("a", 64), []error{convert.ErrRef}, "digest"},
		{"canceled", canceled, e.resolver("", ""), src, e.reg.Ref("app", "c"), []error{context.Canceled}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			work := t.TempDir()
			_, err := convert.ImageAt(tc.ctx, convert.Location{Ref: tc.src}, convert.Location{Ref: tc.dst}, convert.Options{Resolver: tc.resolver, TempDir: work})
			t.Logf("error: %v", err)
			for _, w := range tc.want {
				if !errors.Is(err, w) {
					t.Errorf("error %v, want %v", err, w)
				}
			}
			if err != nil && !strings.Contains(err.Error(), tc.mention) {
				t.Errorf("error %q does not mention %q", err, tc.mention)
			}
			if ents, _ := os.ReadDir(work); len(ents) != 0 {
				t.Errorf("temporary files left: %v", ents)
			}
		})
	}

	t.Run("with credentials", func(t *testing.T) {
		rep, err := convert.ImageAt(t.Context(), convert.Location{Ref: authSrc}, convert.Location{Ref: auth.reg.Ref("private", "1-esgz")}, convert.Options{Resolver: auth.resolver("alice", "secret")})
		if err != nil {
			t.Fatal(err)
		}
		if rep.Push.Uploaded == 0 {
			t.Fatalf("push %+v", rep.Push)
		}
		auth.checkRegistryImage(t, "private", "1-esgz")
	})
}
