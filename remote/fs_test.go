package remote

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

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
