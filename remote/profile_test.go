package remote

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/lazysnap/lazysnap/estargz"
	"github.com/lazysnap/lazysnap/fetcher"
	"github.com/lazysnap/lazysnap/fs/fetch"
	"github.com/lazysnap/lazysnap/internal/testenv"
	"github.com/lazysnap/lazysnap/internal/testenv/registry"
	"github.com/lazysnap/lazysnap/internal/testtar"
	"github.com/lazysnap/lazysnap/layer"
	"github.com/lazysnap/lazysnap/profile"
	"github.com/lazysnap/lazysnap/snapshotter"
	"github.com/opencontainers/go-digest"
)

// pushFilesImage pushes a one-layer eStargz image of 20 small files, in
// chunks of 8 KiB, and returns its labels for the layer's Mount.
func pushFilesImage(t *testing.T, r *registry.Registry, repo string) (labels map[string]string, manifest digest.Digest) {
	t.Helper()
	var files [][2]string
	for i := range 20 {
		files = append(files, [2]string{fmt.Sprintf("f%02d", i), strings.Repeat(fmt.Sprintf("file %d\n", i), 3000)})
	}
	ref, layers, manifest := pushLayers(t, r, repo, write(t, estargz.Writer{}, testtar.Files(files), layer.WriteOptions{ChunkSize: 8 << 10}))
	labels = layerLabels(ref, layers, 0)
	labels[snapshotter.LabelCRIManifestDigest] = manifest.String()
	return labels, manifest
}

// newProfileFS is an FS learning profiles, over a fetcher reaching the
// registries of hosts (the profile registry too, through wrap if not
// nil); its recordings end with FlushProfiles.
func newProfileFS(t *testing.T, hosts string, wrap func(profile.Registry) profile.Registry, fetchProfile, publish bool) (*FS, *profile.Store) {
	f, err := fetcher.New(fetcher.Config{HostsDir: hosts, CacheDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	var reg profile.Registry = f
	if wrap != nil {
		reg = wrap(f)
	}
	root := t.TempDir()
	store := profile.NewStore(filepath.Join(root, "profiles"))
	rfs := New(NewRegistrySource(f), Options{
		Root:  root,
		Layer: fetch.Options{NoPrefetch: true, NoBackground: true},
		Profiles: &ProfileOptions{Store: store, Registry: reg, Fetch: fetchProfile, Publish: publish,
			Limits:  profile.Limits{Quiet: 1 << 40, Total: 1 << 40}, // FlushProfiles ends it
			OnError: func(key string, err error) { t.Errorf("profile %s: %v", key, err) }},
	})
	return rfs, store
}

// TestProfileRecordAndPrefetch: a first start records which chunks were
// read, in order, stores the profile and publishes it (the registry has no
// referrers API: the tag schema); a second FS, with a fresh root and
// cache, finds it in the registry and fetches those chunks at mount, in at
// most 2 requests, before any read; hostile profiles are ignored with
// their reason.
func TestProfileRecordAndPrefetch(t *testing.T) {
	testenv.NeedFUSE(t)
	reg, hosts := startRegistry(t)
	labels, manifest := pushFilesImage(t, reg, "profile/app")
	ctx := context.Background()
	newFS := func(t *testing.T, fetchProfile, publish bool) (*FS, *profile.Store) {
		return newProfileFS(t, hosts, nil, fetchProfile, publish)
	}
	mount := func(t *testing.T, rfs *FS) (string, *mountedLayer) {
		mp := t.TempDir()
		if err := rfs.Mount(ctx, mp, labels); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { rfs.Unmount(ctx, mp) })
		ml := rfs.mounted[mp]
		<-ml.prof.done // the lookup ended (and the profile's prefetch)
		return mp, ml
	}
	state := func(rfs *FS) string { return rfs.Layers()[0].ProfileState }
	order := []string{"f07", "f02", "f11"}

	first, store1 := newFS(t, true, true)
	mp, _ := mount(t, first)
	if s := state(first); s != "recording" {
		t.Fatalf("first mount: profile state %q, want recording", s)
	}
	for _, name := range order {
		if _, err := os.ReadFile(filepath.Join(mp, name)); err != nil {
			t.Fatal(err)
		}
	}
	first.FlushProfiles()
	if s := state(first); s != "recorded" {
		t.Fatalf("after the start: profile state %q, want recorded", s)
	}
	p, err := store1.Get(manifest.String())
	if err != nil {
		t.Fatal(err)
	}
	var want []profile.Chunk
	for _, name := range order {
		for i := range 3 { // 21-24 KB files in 8 KiB chunks
			want = append(want, profile.Chunk{Path: name, Index: i})
		}
	}
	if len(p.Layers) != 1 || !slices.Equal(p.Layers[0].ChunkList(), want) {
		t.Fatalf("recorded %+v, want chunks %v", p.Layers, want)
	}

	t.Run("prefetched from registry", func(t *testing.T) {
		second, _ := newFS(t, true, false)
		mp, ml := mount(t, second)
		st := ml.layer.Stats()
		if st.Requests > 2 || st.ChunksPresent != len(want) || st.FuseReads != 0 {
			t.Fatalf("at mount: %d requests, %d chunks present, %d reads; want ≤ 2 requests for the %d profiled chunks, before any read", st.Requests, st.ChunksPresent, st.FuseReads, len(want))
		}
		if s := state(second); s != "prefetched from registry" {
			t.Fatalf("profile state %q", s)
		}
		for _, name := range order {
			if _, err := os.ReadFile(filepath.Join(mp, name)); err != nil {
				t.Fatal(err)
			}
		}
		if n := ml.layer.Stats().Requests; n != st.Requests {
			t.Fatalf("reading the profiled files made %d more requests", n-st.Requests)
		}
	})

	other := *p
	other.Manifest = digest.FromString("another image")
	staleTOC := *p
	staleTOC.Layers = []profile.Layer{p.Layers[0]}
	staleTOC.Layers[0].TOC = digest.FromString("old toc")
	past := *p
	past.Layers = []profile.Layer{profile.NewLayer(p.Layers[0].Digest, p.Layers[0].TOC, []profile.Chunk{{Path: "f02", Index: 99}})}
	missing := *p
	missing.Layers = []profile.Layer{profile.NewLayer(p.Layers[0].Digest, p.Layers[0].TOC, []profile.Chunk{{Path: "nope", Index: 0}})}
	for _, tc := range []struct {
		name string
		p    *profile.Profile
		want string
	}{
		{"another image", &other, "recording (ignored: the local profile is for image " + other.Manifest.String() + ")"},
		{"stale TOC", &staleTOC, "ignored: stale TOC"},
		{"chunk past the index", &past, "ignored: chunk 99 of f02 is past the index"},
		{"file not in the index", &missing, "ignored: nope is not a file of the index"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rfs, store := newFS(t, false, false)
			b, err := profile.Marshal(tc.p)
			if err != nil {
				t.Fatal(err)
			}
			// stored under this image's key, whatever it claims
			if err := os.MkdirAll(store.Dir(), 0o700); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(store.Dir(), manifest.Algorithm().String()+"-"+manifest.Encoded()+".json"), b, 0o600); err != nil {
				t.Fatal(err)
			}
			_, ml := mount(t, rfs)
			if s := state(rfs); !strings.HasPrefix(s, tc.want) {
				t.Fatalf("profile state %q, want %q", s, tc.want)
			}
			if st := ml.layer.Stats(); st.Requests != 0 || st.ChunksPresent != 0 {
				t.Fatalf("an ignored profile fetched: %+v", st)
			}
		})
	}
}

// gatedRegistry is a profile registry whose referrers lookups wait for
// gate to be closed.
type gatedRegistry struct {
	profile.Registry
	gate chan struct{}
}

func (g gatedRegistry) Referrers(ctx context.Context, ref string, subject digest.Digest, artifactType string) ([]byte, error) {
	select {
	case <-g.gate:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	return g.Registry.Referrers(ctx, ref, subject, artifactType)
}

// TestMountDoesNotWaitForProfileLookup: a Mount whose image's profile
// lookup has not ended returns without waiting for it (the layer's
// profile state is "looking up"); the chunks its readers access meanwhile
// are recorded, in order, once the lookup has found no profile.
func TestMountDoesNotWaitForProfileLookup(t *testing.T) {
	testenv.NeedFUSE(t)
	reg, hosts := startRegistry(t)
	labels, manifest := pushFilesImage(t, reg, "profile/pending")
	ctx := context.Background()
	gate := make(chan struct{})
	rfs, store := newProfileFS(t, hosts, func(r profile.Registry) profile.Registry { return gatedRegistry{r, gate} }, true, false)
	t.Cleanup(func() { rfs.Close() })
	mp := t.TempDir()
	if err := rfs.Mount(ctx, mp, labels); err != nil { // the lookup waits at the gate
		t.Fatal(err)
	}
	t.Cleanup(func() { rfs.Unmount(ctx, mp) })
	if s := rfs.Layers()[0].ProfileState; s != "looking up" {
		t.Fatalf("mounted while the lookup waits: profile state %q, want looking up", s)
	}
	order := []string{"f05", "f01"}
	for _, name := range order {
		if _, err := os.ReadFile(filepath.Join(mp, name)); err != nil {
			t.Fatal(err)
		}
	}
	close(gate)
	<-rfs.mounted[mp].prof.done
	if s := rfs.Layers()[0].ProfileState; s != "recording" {
		t.Fatalf("after the lookup: profile state %q, want recording", s)
	}
	rfs.FlushProfiles()
	p, err := store.Get(manifest.String())
	if err != nil {
		t.Fatal(err)
	}
	var want []profile.Chunk
	for _, name := range order {
		for i := range 3 {
			want = append(want, profile.Chunk{Path: name, Index: i})
		}
	}
	if len(p.Layers) != 1 || !slices.Equal(p.Layers[0].ChunkList(), want) {
		t.Fatalf("recorded %+v, want chunks %v", p.Layers, want)
	}
}
