package main

import (
	"context"
	"encoding/json"
	"errors"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/lazysnap/lazysnap/fetcher"
	"github.com/lazysnap/lazysnap/ops"
	"github.com/lazysnap/lazysnap/profile"
	"github.com/opencontainers/go-digest"
	specs "github.com/opencontainers/image-spec/specs-go"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

const tocDigestAnnotation = "containerd.io/snapshot/stargz/toc.digest"

// profImage is an image pushed for the profile test: its reference,
// manifest digest and layers (busybox first, data second).
type profImage struct {
	ref      string
	manifest ocispec.Descriptor
	layers   []ocispec.Descriptor
}

func (s *stack) pushProfImage(t *testing.T, variant, tag string) profImage {
	t.Helper()
	_, dir := buildImages(t, variant)
	ref, _ := s.pushLayout(t, dir, "profiled", tag)
	var idx ocispec.Index
	readJSON(t, filepath.Join(dir, "index.json"), &idx)
	md := idx.Manifests[0]
	md.Annotations = nil
	return profImage{ref: ref, manifest: md, layers: layoutLayers(t, dir)}
}

// profileCLI runs `lazysnap profile ARGS...` against the stack's config.
func (s *stack) profileCLI(t *testing.T, args ...string) string {
	t.Helper()
	out, err := exec.Command(s.bin, append([]string{"profile", "--config", filepath.Join(s.dir, "lazysnap.toml")}, args...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("lazysnap profile %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// imageLayers returns the status of ref's mounted layers by blob digest.
func imageLayers(rep ops.Report, ref string) map[string]ops.Layer {
	out := map[string]ops.Layer{}
	for _, img := range rep.Images {
		if img.Ref == ref {
			for _, l := range img.Layers {
				out[l.Digest] = l
			}
		}
	}
	return out
}

// waitFor polls cond until it holds, failing the test after d with what
// cond last said.
func waitFor(t *testing.T, d time.Duration, what string, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		ok, last := cond()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %v; last: %s", what, d, last)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// registryOf is a fetcher reaching the stack's registry as lazysnap does
// (its hosts.toml: the WAN proxy as the server, with push).
func (s *stack) registryOf(t *testing.T) *fetcher.Fetcher {
	t.Helper()
	f, err := fetcher.New(fetcher.Config{HostsDir: s.hosts})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return f
}

// publishRaw publishes blob, whatever it holds, as the profile artifact
// of img (what profile.Publish does, without checking the blob).
func publishRaw(t *testing.T, reg profile.Registry, img profImage, blob []byte) {
	t.Helper()
	ctx := context.Background()
	repoRef := img.ref[:strings.LastIndex(img.ref, ":")] // host:port/name, without the tag
	empty := []byte("{}")
	cfg := ocispec.Descriptor{MediaType: "application/vnd.oci.empty.v1+json", Digest: digest.FromBytes(empty), Size: 2}
	layer := ocispec.Descriptor{MediaType: profile.MediaType, Digest: digest.FromBytes(blob), Size: int64(len(blob))}
	created := map[string]string{"org.opencontainers.image.created": time.Now().UTC().Format(time.RFC3339Nano)}
	m := ocispec.Manifest{Versioned: specs.Versioned{SchemaVersion: 2}, MediaType: ocispec.MediaTypeImageManifest,
		ArtifactType: profile.MediaType, Config: cfg, Layers: []ocispec.Descriptor{layer}, Subject: &img.manifest, Annotations: created}
	mb, _ := json.Marshal(m)
	md := ocispec.Descriptor{MediaType: ocispec.MediaTypeImageManifest, Digest: digest.FromBytes(mb), Size: int64(len(mb))}
	for _, c := range []struct {
		d    ocispec.Descriptor
		data []byte
	}{{cfg, empty}, {layer, blob}, {md, mb}} {
		if err := reg.Push(ctx, repoRef+"@"+c.d.Digest.String(), c.d, c.data); err != nil {
			t.Fatalf("push %s: %v", c.d.Digest, err)
		}
	}
	if _, err := reg.Referrers(ctx, repoRef, img.manifest.Digest, profile.MediaType); err == nil {
		return // the registry indexes the subject
	} else if !errors.Is(err, fetcher.ErrNotFound) {
		t.Fatalf("referrers: %v", err)
	}
	md.ArtifactType, md.Annotations = profile.MediaType, created
	idx := ocispec.Index{Versioned: specs.Versioned{SchemaVersion: 2}, MediaType: ocispec.MediaTypeImageIndex, Manifests: []ocispec.Descriptor{md}}
	ib, _ := json.Marshal(idx)
	id := ocispec.Descriptor{MediaType: ocispec.MediaTypeImageIndex, Digest: digest.FromBytes(ib), Size: int64(len(ib))}
	tag := img.manifest.Digest.Algorithm().String() + "-" + img.manifest.Digest.Encoded()
	if err := reg.Push(ctx, repoRef+":"+tag, id, ib); err != nil {
		t.Fatalf("push the referrers tag: %v", err)
	}
}

// TestLearnedProfileE2E: node A records what a container's start reads
// and publishes it to the registry; node B, fresh, finds it there and
// fetches those chunks at mount, so that the same container's start asks
// the registry for nothing more. Profiles that do not fit the image (a
// stale TOC, a chunk past a file) or are not profiles at all are ignored,
// with the reason in status, and the containers run as without them.
func TestLearnedProfileE2E(t *testing.T) {
	// quiet: the recording ends this long after the container's last new
	// read. 500 ms lost data/other once on a machine running other suites
	// beside this one (the shell's exec of sha256sum came later); 10 s
	// between two reads of a three-command script is no machine's speed
	a := startStack(t, "[fetch]\n  no_background = true\n[profile]\n  publish = true\n  quiet = \"10s\"\n")
	img := a.pushProfImage(t, "learned profile", "v1")
	sums := dataSums(t)
	const script = "cat /data/small; sha256sum /data/other | head -c 64"
	want := "hello from a lazy layer\n" + sums.other
	run := func(s *stack, ref, id string) {
		t.Helper()
		if got := s.ctr(t, "run", "--rm", "--snapshotter", "lazysnap", ref, id, "/bin/sh", "-c", script); got != want {
			t.Fatalf("container %s printed %q, want %q", id, got, want)
		}
	}
	key := img.manifest.Digest.String()
	busyboxLayer, dataLayer := img.layers[0].Digest.String(), img.layers[1].Digest.String()

	t.Run("node A records and publishes", func(t *testing.T) {
		if out := a.pull(t, img.ref); !strings.Contains(out, "2 of 2 layers lazy") {
			t.Fatalf("pull: %s", out)
		}
		run(a, img.ref, "prof-a")
		waitFor(t, 30*time.Second, "the recorded profile in 'lazysnap profile list'", func() (bool, string) {
			out := a.profileCLI(t, "list")
			return strings.Contains(out, key), out
		})
		show := a.profileCLI(t, "show", key)
		t.Logf("node A's profile:\n%s", show)
		for _, f := range []string{"data/small", "data/other", "bin/busybox"} {
			if !strings.Contains(show, "  "+f+" #") {
				t.Errorf("the profile lacks %s:\n%s", f, show)
			}
		}
		recorded := imageLayers(a.status(t), img.ref)
		if len(recorded) != 2 {
			t.Errorf("node A's status lists %d mounted layers of %s, want 2: %s", len(recorded), img.ref, jsonOf(recorded))
		}
		for dg, l := range recorded {
			if l.Profile != "recorded" {
				t.Errorf("node A: layer %s profile state %q, want recorded", dg, l.Profile)
			}
		}
		// published asynchronously, after it was stored: poll the registry
		reg := a.registryOf(t)
		waitFor(t, 30*time.Second, "the profile in the registry", func() (bool, string) {
			p, err := profile.Find(context.Background(), reg, img.ref, img.manifest.Digest)
			if err != nil {
				return false, err.Error()
			}
			return p.Layer(img.layers[1].Digest) != nil, "no data layer in the published profile"
		})
	})

	b := startStackWith(t, "[fetch]\n  no_background = true\n", stackOptions{reg: a.reg})

	t.Run("node B prefetches the published profile", func(t *testing.T) {
		b.wan.Reset()
		if out := b.pull(t, img.ref); !strings.Contains(out, "2 of 2 layers lazy") {
			t.Fatalf("pull: %s", out)
		}
		var mounted map[string]ops.Layer
		waitFor(t, 30*time.Second, "node B's profile prefetch", func() (bool, string) {
			mounted = imageLayers(b.status(t), img.ref)
			done := len(mounted) == 2
			for _, l := range mounted {
				done = done && l.PrefetchDone && l.Profile == "prefetched from registry"
			}
			return done, jsonOf(mounted)
		})
		wanAtMount := b.wan.Stats()
		if p := b.profileCLI(t, "list"); !strings.Contains(p, key) {
			t.Errorf("node B did not store the profile it found:\n%s", p)
		}
		run(b, img.ref, "prof-b")
		after := imageLayers(b.status(t), img.ref)
		for _, dg := range []string{busyboxLayer, dataLayer} {
			m, l := mounted[dg], after[dg]
			t.Logf("node B layer %s: at mount %d requests, %d bytes, %d/%d chunks; after the container %d requests, %d bytes",
				dg, m.Requests, m.FetchedBytes, m.ChunksPresent, m.Chunks, l.Requests, l.FetchedBytes)
			if m.Requests > 3 {
				t.Errorf("layer %s: %d requests for the profile's chunks at mount, want at most 3", dg, m.Requests)
			}
			if l.Requests != m.Requests || l.FetchedBytes != m.FetchedBytes {
				t.Errorf("layer %s: the container's reads fetched more (%d requests, %d bytes after; %d, %d at mount): the profile missed them",
					dg, l.Requests, l.FetchedBytes, m.Requests, m.FetchedBytes)
			}
		}
		if m := mounted[dataLayer]; m.FetchedBytes < 4<<20 || m.ChunksPresent == m.Chunks {
			t.Errorf("data layer at mount: %d bytes, %d of %d chunks; want data/other's 4 MiB and not data/big", m.FetchedBytes, m.ChunksPresent, m.Chunks)
		}
		t.Logf("node B WAN: at mount (pull and prefetch) %v", wanAtMount)
	})

	t.Run("stale and hostile profiles are ignored", func(t *testing.T) {
		reg := b.registryOf(t)
		// a profile for the image whose data layer names another TOC,
		// and whose busybox layer names a chunk past bin/busybox
		stale := b.pushProfImage(t, "stale profile", "stale")
		p := &profile.Profile{Version: profile.Version, Manifest: stale.manifest.Digest, Ref: stale.ref, Layers: []profile.Layer{
			profile.NewLayer(stale.layers[0].Digest, digest.Digest(stale.layers[0].Annotations[tocDigestAnnotation]), []profile.Chunk{{Path: "bin/busybox", Index: 9999}}),
			profile.NewLayer(stale.layers[1].Digest, digest.FromString("another TOC"), []profile.Chunk{{Path: "data/other", Index: 0}}),
		}}
		if _, err := profile.Publish(context.Background(), reg, stale.ref, p, time.Now()); err != nil {
			t.Fatal(err)
		}
		// a profile artifact whose blob is not a profile
		garbage := b.pushProfImage(t, "garbage profile", "garbage")
		publishRaw(t, reg, garbage, []byte("this is not JSON {"))

		for _, c := range []struct {
			img  profImage
			want map[string]string // layer digest: profile state prefix
		}{
			{stale, map[string]string{
				stale.layers[0].Digest.String(): "ignored: chunk 9999 of bin/busybox is past the index",
				stale.layers[1].Digest.String(): "ignored: stale TOC (the profile names " + digest.FromString("another TOC").String(),
			}},
			{garbage, map[string]string{
				garbage.layers[0].Digest.String(): "ignored: profile: invalid",
				garbage.layers[1].Digest.String(): "ignored: profile: invalid",
			}},
		} {
			if out := b.pull(t, c.img.ref); !strings.Contains(out, "2 of 2 layers lazy") {
				t.Fatalf("pull %s: %s", c.img.ref, out)
			}
			run(b, c.img.ref, "prof-"+c.img.ref[strings.LastIndex(c.img.ref, ":")+1:])
			layers := imageLayers(b.status(t), c.img.ref)
			for dg, w := range c.want {
				// the garbage one is ignored and the start recorded instead:
				// "recording (ignored: ...)"
				if got := layers[dg].Profile; !strings.HasPrefix(got, w) && !strings.Contains(got, "("+w) {
					t.Errorf("%s layer %s: profile state %q, want %q", c.img.ref, dg, got, w)
				} else {
					t.Logf("%s layer %s: %s", c.img.ref, dg, got)
				}
			}
		}
	})
}

func jsonOf(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}
