package remote

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/lazysnap/lazysnap/fetcher"
	"github.com/lazysnap/lazysnap/internal/testtar"
	"github.com/lazysnap/lazysnap/snapshotter"
	"github.com/lazysnap/lazysnap/soci"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// TestPublishThenTrusted: a node that pulled a gzip layer at line rate
// with Options.Publish pushes its zTOC as a v1 SOCI index of the image to
// the publish repository (another repository than the image's); a second
// node that trusts that repository mounts the layer lazily through it
// (format soci), without WithSociV1; nodes that trust nothing, or another
// repository, do not, and neither does WithSociV1 alone (the index is not
// among the referrers in the image's own repository).
func TestPublishThenTrusted(t *testing.T) {
	r, f := startFUSERegistry(t)
	ctx := context.Background()
	tarb := testtar.Synthetic(1 << 20)
	img, err := r.PushImage(ctx, "publish/plain", "v1", gzipped(tarb))
	if err != nil {
		t.Fatal(err)
	}
	layer := img.Layers[0].Digest
	repo := r.Host + "/cluster/indexes"

	a := New(NewRegistrySource(f), Options{Root: t.TempDir(), Publish: &PublishOptions{Repository: repo, Registry: f}})
	if _, err := a.Pull(ctx, snapshotter.PullRequest{Dir: t.TempDir(), Labels: sociLabels(img.Ref, layer)}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.Close() })
	ps := a.Pulls()
	for deadline := time.Now().Add(30 * time.Second); len(ps) == 1 && ps[0].Published == "publishing" && time.Now().Before(deadline); ps = a.Pulls() {
		time.Sleep(10 * time.Millisecond) // the push runs in the background
	}
	if len(ps) != 1 || !strings.HasPrefix(ps[0].Published, "published in SOCI index sha256:") || !strings.HasSuffix(ps[0].Published, " to "+repo) {
		t.Fatalf("Pulls = %+v, want the layer published to %s", ps, repo)
	}

	for _, tc := range []struct {
		name string
		opts []SourceOption
		want string // "" = lazy, else in the not-lazy reason
	}{
		{"trusted publish repository", []SourceOption{WithTrustedSociRepositories(r.Host+"/other", repo)}, ""},
		{"nothing trusted", nil, "no SOCI index"},
		{"another repository trusted", []SourceOption{WithTrustedSociRepositories(r.Host + "/other")}, "no SOCI index"},
		{"v1 indexes allowed, nothing trusted", []SourceOption{WithSociV1(true)}, "no SOCI index"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fs := New(NewRegistrySource(f, tc.opts...), Options{Root: t.TempDir()})
			t.Cleanup(func() { fs.Close() })
			mp := t.TempDir()
			err := fs.Mount(ctx, mp, sociLabels(img.Ref, layer))
			if tc.want != "" {
				if err == nil || !strings.Contains(err.Error(), tc.want) {
					t.Fatalf("Mount: %v, want not lazy with %q", err, tc.want)
				}
				return
			}
			wantSociMount(t, fs, mp, err)
			ents, _ := testtar.Read(tarb)
			for _, name := range []string{"big", "usr/bin/tool"} {
				if got, err := os.ReadFile(filepath.Join(mp, name)); err != nil || !bytes.Equal(got, ents[name].Content) {
					t.Fatalf("lazy %s: %v", name, err)
				}
			}
		})
	}
}

// TestTrustedOwnRepository: a v1 index among the referrers in the
// image's own repository is used without WithSociV1 when that repository
// is trusted, and refused, naming both keys, when it is not.
func TestTrustedOwnRepository(t *testing.T) {
	r, f := startFUSERegistry(t)
	ctx := context.Background()
	blob, _ := testtar.SociLayer(1)
	img, err := r.Pusher().PushSociImageV1(ctx, r.Host, "trusted/v1", "v1", 64<<10, blob)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name    string
		trusted string
		want    string // "" = lazy
	}{
		{"own repository trusted", r.Host + "/trusted/v1", ""},
		{"another trusted", r.Host + "/other", "trusted_repositories"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fs := New(NewRegistrySource(f, WithTrustedSociRepositories(tc.trusted)), Options{Root: t.TempDir()})
			t.Cleanup(func() { fs.Close() })
			mp := t.TempDir()
			err := fs.Mount(ctx, mp, sociLabels(img.Ref, img.Layers[0].Digest))
			if tc.want != "" {
				if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), "allow_v1_indexes") {
					t.Fatalf("Mount: %v, want not lazy naming %q and allow_v1_indexes", err, tc.want)
				}
				return
			}
			wantSociMount(t, fs, mp, err)
		})
	}
}

// wantSociMount fails t unless the Mount at mp (which returned err) is
// lazy, the FS's one layer, of format soci; it unmounts it at cleanup.
func wantSociMount(t *testing.T, fs *FS, mp string, err error) {
	t.Helper()
	if err != nil {
		t.Fatalf("Mount: %v", err)
	}
	t.Cleanup(func() { fs.Unmount(context.Background(), mp) })
	if ls := fs.Layers(); len(ls) != 1 || ls[0].Format != "soci" {
		t.Fatalf("layers %+v, want one of format soci", ls)
	}
}

// gzipped is b compressed with gzip.
func gzipped(b []byte) []byte {
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	zw.Write(b)
	zw.Close()
	return buf.Bytes()
}

// TestNewestV1: the index a lookup uses among an image's referrers.
func TestNewestV1(t *testing.T) {
	v1 := func(d, created string) ocispec.Descriptor {
		m := ocispec.Descriptor{ArtifactType: soci.ArtifactTypeV1, Digest: digest.Digest(d)}
		if created != "" {
			m.Annotations = map[string]string{ocispec.AnnotationCreated: created}
		}
		return m
	}
	other := ocispec.Descriptor{ArtifactType: "application/vnd.example", Digest: "sha256:other"}
	for _, tc := range []struct {
		name string
		refs []ocispec.Descriptor
		want digest.Digest
	}{
		{"none", []ocispec.Descriptor{other}, ""},
		{"undated: the last listed", []ocispec.Descriptor{v1("sha256:a", ""), v1("sha256:b", ""), other}, "sha256:b"},
		{"dated: the newest, listed first", []ocispec.Descriptor{v1("sha256:new", "2026-12-07T22:00:00.12Z"), v1("sha256:old", "2026-12-07T22:00:00.1Z")}, "sha256:new"},
		{"dated beats undated", []ocispec.Descriptor{v1("sha256:dated", "2026-12-07T22:00:00Z"), v1("sha256:undated", "")}, "sha256:dated"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := newestV1(tc.refs).Digest; got != tc.want {
				t.Fatalf("newestV1 = %q, want %q", got, tc.want)
			}
		})
	}
}

// TestPublishOncePerPull: a pull of a three-layer gzip image, its layers
// pulled at line rate one after another as containerd prepares them
// (each one's labels listing it and the layers above), pushes one SOCI
// index, listing every layer, once the top layer is done (the quiet
// period, an hour here, never ends it): not one per layer.
func TestPublishOncePerPull(t *testing.T) {
	r, f := startFUSERegistry(t)
	ctx := context.Background()
	img, err := r.PushImage(ctx, "publish/three", "v1", gzipped(testtar.Synthetic(256<<10)), gzipped(testtar.Synthetic(128<<10)), gzipped(testtar.Synthetic(64<<10)))
	if err != nil {
		t.Fatal(err)
	}
	repo := r.Host + "/cluster/indexes"
	a := New(NewRegistrySource(f), Options{Root: t.TempDir(), Publish: &PublishOptions{Repository: repo, Registry: f, Quiet: time.Hour}})
	t.Cleanup(func() { a.Close() })
	referrers := func() []ocispec.Descriptor {
		t.Helper()
		b, err := (fetcherSource{f: f}).tagSchemaIndex(ctx, repo+"@"+img.Manifest.Digest.String(), img.Manifest.Digest)
		if errors.Is(err, fetcher.ErrNotFound) {
			return nil
		}
		if err != nil {
			t.Fatal(err)
		}
		var idx ocispec.Index
		if err := json.Unmarshal(b, &idx); err != nil {
			t.Fatal(err)
		}
		return idx.Manifests
	}
	for i := range img.Layers {
		if _, err := a.Pull(ctx, snapshotter.PullRequest{Dir: t.TempDir(), Labels: layerLabels(img.Ref, img.Layers, i)}); err != nil {
			t.Fatal(err)
		}
		if i < len(img.Layers)-1 {
			if refs := referrers(); len(refs) != 0 {
				t.Fatalf("after layer %d of %d: referrers %+v, want none before the top layer", i+1, len(img.Layers), refs)
			}
		}
	}
	ps := a.Pulls()
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); ps = a.Pulls() {
		if !slices.ContainsFunc(ps, func(p PullInfo) bool { return p.Published == "publishing" }) {
			break
		}
		time.Sleep(10 * time.Millisecond) // the push runs in the background
	}
	var published []string
	for _, p := range ps {
		published = append(published, p.Published)
	}
	refs := referrers()
	if len(refs) != 1 || refs[0].ArtifactType != soci.ArtifactTypeV1 {
		t.Fatalf("referrers %+v, want one SOCI v1 index", refs)
	}
	want := "published in SOCI index " + refs[0].Digest.String() + " to " + repo
	if len(published) != 3 || slices.ContainsFunc(published, func(s string) bool { return s != want }) {
		t.Fatalf("Published %q, want each %q", published, want)
	}
	b, err := (fetcherSource{f: f}).fetchBlob(ctx, repo+"@"+refs[0].Digest.String(), refs[0], soci.MaxIndexManifest)
	if err != nil {
		t.Fatal(err)
	}
	idx, err := soci.ParseIndexManifest(b)
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range img.Layers {
		if _, err := idx.Ztoc(l.Digest); err != nil {
			t.Errorf("the index has no zTOC of layer %s: %v", l.Digest, err)
		}
	}
}

// TestPublishSpanSize: the published index gives each zTOC the span size
// it was built with (a local zTOC of another span size than the default:
// one kept before the default changed), and leaves out a local zTOC that
// does not parse.
func TestPublishSpanSize(t *testing.T) {
	r, f := startFUSERegistry(t)
	ctx := context.Background()
	blobs := [][]byte{gzipped(testtar.Synthetic(1 << 20)), gzipped(testtar.Synthetic(512 << 10))}
	img, err := r.PushImage(ctx, "publish/span", "v1", blobs...)
	if err != nil {
		t.Fatal(err)
	}
	repo := r.Host + "/cluster/indexes"
	a := New(NewRegistrySource(f), Options{Root: t.TempDir(), Publish: &PublishOptions{Repository: repo, Registry: f}})
	t.Cleanup(func() { a.Close() })
	const span = 256 << 10
	z, err := soci.Build(bytes.NewReader(blobs[0]), soci.BuildOptions{SpanSize: span})
	if err != nil {
		t.Fatal(err)
	}
	if err := a.saveZtoc(img.Layers[0].Digest, z); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(a.ztocPath(img.Layers[1].Digest), []byte("not a zTOC"), 0o600); err != nil {
		t.Fatal(err)
	}
	d, err := a.publish(ctx, img.Ref)
	if err != nil {
		t.Fatal(err)
	}
	_, md, err := f.Resolve(ctx, repo+"@"+d.String())
	if err != nil {
		t.Fatal(err)
	}
	b, err := (fetcherSource{f: f}).fetchBlob(ctx, repo+"@"+d.String(), md, soci.MaxIndexManifest)
	if err != nil {
		t.Fatal(err)
	}
	idx, err := soci.ParseIndexManifest(b)
	if err != nil {
		t.Fatal(err)
	}
	if len(idx.Layers) != 1 || idx.Layers[0].Annotations[soci.AnnotationSpanSize] != strconv.Itoa(span) || idx.Layers[0].Annotations[soci.AnnotationLayerDigest] != img.Layers[0].Digest.String() {
		t.Fatalf("index layers %+v, want the first layer's zTOC alone, span size %d", idx.Layers, span)
	}
}
