package remote

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/lazysnap/lazysnap/estargz"
	"github.com/lazysnap/lazysnap/fetcher"
	"github.com/lazysnap/lazysnap/index"
	"github.com/lazysnap/lazysnap/internal/testenv"
	"github.com/lazysnap/lazysnap/snapshotter"
	"github.com/opencontainers/go-digest"
)

func key(blob, index string) layerKey {
	return layerKey{blob: digest.FromString(blob), index: digest.FromString(index)}
}

// TestCleanupSpares: Cleanup removes the content of layers that are not
// mounted, spares a layer being mounted, and finishes removals a crash
// interrupted.
func TestCleanupSpares(t *testing.T) {
	root := t.TempDir()
	r := New(nil, Options{Root: root})
	content := filepath.Join(root, "content")
	unused, mounting := key("c", "toc"), key("d", "toc")
	for _, d := range []string{unused.contentName(), mounting.contentName(), removingPrefix + "interrupted"} {
		if err := os.MkdirAll(filepath.Join(content, d, "files", "usr"), 0o700); err != nil {
			t.Fatal(err)
		}
	}
	if err := r.claim(mounting); err != nil {
		t.Fatal(err)
	}
	if err := r.Cleanup(context.Background()); err != nil {
		t.Fatal(err)
	}
	if ents, _ := os.ReadDir(content); len(ents) != 1 || ents[0].Name() != mounting.contentName() {
		t.Fatalf("content after Cleanup: %v, want only the layer being mounted", ents)
	}
	r.release(mounting)
	if err := r.Cleanup(context.Background()); err != nil {
		t.Fatal(err)
	}
	if ents, _ := os.ReadDir(content); len(ents) != 0 {
		t.Fatalf("content after the mount ended and Cleanup ran again: %d entries", len(ents))
	}
}

// TestSecondIndexRefused: a blob being mounted with one index refuses a
// Mount naming another (one registry serves other bytes under the digest),
// as verification; the same index, or another blob, is fine; and the two
// never share a content directory.
func TestSecondIndexRefused(t *testing.T) {
	r := New(nil, Options{Root: t.TempDir()})
	a := key("blob", "toc a")
	for _, tc := range []struct {
		name  string
		k     layerKey
		fails bool
	}{
		{"same blob, same TOC", a, false},
		{"same blob, other TOC", key("blob", "toc b"), true},
		{"other blob, other TOC", key("other blob", "toc b"), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := r.claim(a); err != nil {
				t.Fatal(err)
			}
			defer r.release(a)
			err := r.claim(tc.k)
			if err == nil {
				r.release(tc.k)
			}
			if tc.fails != (err != nil) || tc.fails && (!errors.Is(err, snapshotter.ReasonVerification) || !strings.Contains(err.Error(), "mounted with TOC")) {
				t.Fatalf("claim: %v, want a refusal: %v", err, tc.fails)
			}
			if tc.k != a && tc.k.contentName() == a.contentName() {
				t.Fatalf("%v and %v share content directory %s", tc.k, a, a.contentName())
			}
		})
	}
	if len(r.mounting) != 0 {
		t.Fatalf("claims left: %v", r.mounting)
	}
}

// TestIndexCaps: a layer whose index is over the entry cap, or would take
// the mounted indexes past their memory budget, falls back (not-lazy) with
// the cap named; the budget is released on Unmount.
func TestIndexCaps(t *testing.T) {
	testenv.NeedFUSE(t)
	r, hosts := startRegistry(t)
	ref, layers := pushLazyImage(t, r, "caps/two", 2)
	f, err := fetcher.New(fetcher.Config{HostsDir: hosts})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	mount := func(fs *FS, i int) (string, error) {
		mp := t.TempDir()
		return mp, fs.Mount(context.Background(), mp, layerLabels(ref, layers, i))
	}
	t.Run("entries", func(t *testing.T) {
		fs := New(NewRegistrySource(f), Options{Root: t.TempDir(), MaxEntries: 1})
		if _, err := mount(fs, 0); !errors.Is(err, snapshotter.ReasonNotLazy) || !errors.Is(err, estargz.ErrTooManyEntries) {
			t.Fatalf("Mount over the entry cap: %v, want not-lazy: too many entries", err)
		}
	})
	t.Run("memory", func(t *testing.T) {
		probe := New(NewRegistrySource(f), Options{Root: t.TempDir()})
		mp, err := mount(probe, 0)
		if err != nil {
			t.Fatal(err)
		}
		one := probe.mounted[mp].mem
		probe.Unmount(context.Background(), mp)
		budget := index.NewBudget(one + one/2) // one layer's index, not two
		fs := New(NewRegistrySource(f), Options{Root: t.TempDir(), IndexMemory: budget})
		first, err := mount(fs, 0)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := mount(fs, 1); !errors.Is(err, snapshotter.ReasonNotLazy) || !errors.Is(err, index.ErrBudget) {
			t.Fatalf("Mount past the memory budget: %v, want not-lazy: budget", err)
		}
		if err := fs.Unmount(context.Background(), first); err != nil {
			t.Fatal(err)
		}
		if budget.Used() != 0 {
			t.Fatalf("budget holds %d bytes after Unmount", budget.Used())
		}
		second, err := mount(fs, 1)
		if err != nil {
			t.Fatalf("Mount after the first layer was unmounted: %v", err)
		}
		fs.Unmount(context.Background(), second)
	})
}
