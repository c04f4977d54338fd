package remote

import (
	"context"
	"errors"
	"testing"

	"github.com/lazysnap/lazysnap/fetcher"
	"github.com/lazysnap/lazysnap/index"
	"github.com/lazysnap/lazysnap/internal/testtar"
	"github.com/lazysnap/lazysnap/snapshotter"
	"github.com/lazysnap/lazysnap/soci"
	"github.com/lazysnap/lazysnap/soci/lazy"
)

// TestSociOpenBudget: opening a SOCI layer holds its zTOC, and what the
// zTOC decodes into, in the index memory budget until the index is built
// (a budget without room for them refuses the layer before it is decoded,
// not lazy), and gives it back after.
func TestSociOpenBudget(t *testing.T) {
	r, hosts := startRegistry(t)
	f, err := fetcher.New(fetcher.Config{HostsDir: hosts})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	ctx := context.Background()
	blob, _ := testtar.SociLayer(6)
	img, err := r.Pusher().PushSociImage(ctx, r.Host, "soci/budget", "v1", 64<<10, nil, blob)
	if err != nil {
		t.Fatal(err)
	}
	src := NewRegistrySource(f)
	desc, err := src.Layer(ctx, img.Ref, img.Layers[0].Digest)
	if err != nil {
		t.Fatal(err)
	}
	zsize := img.Sizes[0].Size
	var decoded int64
	if _, err := soci.UnmarshalLimits(soci.Marshal(img.Ztocs[0]), soci.Limits{Reserve: func(n int64) error { decoded = n; return nil }}); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name   string
		budget int64
		ok     bool
	}{
		{"room for it", 1 << 30, true},
		{"no room for the zTOC", zsize - 1, false},
		{"room for the zTOC, not for what it decodes into", zsize + decoded - 1, false},
		{"room for the decoded zTOC, not for its layout", zsize + decoded + 1, false},
		{"room for the decoded zTOC and its layout", zsize + decoded + int64(len(img.Ztocs[0].Files)+1)*lazy.EntryLayoutBytes, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			budget := index.NewBudget(tc.budget)
			cs, err := pickFormat(desc, 0, budget)
			if err != nil || len(cs) != 1 || cs[0].f.Name() != "soci" {
				t.Fatalf("formats %v: %v", cs, err)
			}
			b, err := src.Blob(ctx, img.Ref, desc)
			if err != nil {
				t.Fatal(err)
			}
			_, _, _, err = openIndex(ctx, b, cs)
			err = fallbackReason(err) // as Mount gives it its reason
			switch {
			case tc.ok && err != nil:
				t.Fatalf("Open: %v", err)
			case !tc.ok && (!errors.Is(err, index.ErrBudget) || !errors.Is(err, snapshotter.ReasonNotLazy)):
				t.Fatalf("Open with a budget of %d bytes (zTOC of %d): %v, want not-lazy: budget", tc.budget, zsize, err)
			}
			if budget.Used() != 0 {
				t.Fatalf("the budget holds %d bytes after Open", budget.Used())
			}
		})
	}
}
