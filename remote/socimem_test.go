package remote

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"strings"
	"testing"

	"github.com/lazysnap/lazysnap/fetcher"
	"github.com/lazysnap/lazysnap/index"
	"github.com/lazysnap/lazysnap/layer"
	"github.com/lazysnap/lazysnap/snapshotter"
	"github.com/lazysnap/lazysnap/soci"
	"github.com/opencontainers/go-digest"
)

// TestSociDecoderMemory: what a SOCI layer's decoder reports against the
// index memory budget covers what it holds with its span cache full,
// counted from the spans' real sizes: a zTOC that claims a span size of 1
// byte (which the checkpoint blob carries unchecked) holds as much.
func TestSociDecoderMemory(t *testing.T) {
	blob, _ := sociLayer(t, 5)
	for _, tc := range []struct {
		name     string
		spanSize int64 // claimed in the zTOC; 0: as built
	}{
		{"as built", 0},
		{"span size claimed 1", 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			z, err := soci.Build(bytesReader(blob), soci.BuildOptions{SpanSize: 64 << 10})
			if err != nil {
				t.Fatal(err)
			}
			if tc.spanSize != 0 {
				z.Checkpoints.SpanSize = tc.spanSize
			}
			z, err = soci.Unmarshal(soci.Marshal(z), 0)
			if err != nil {
				t.Fatal(err)
			}
			ents, err := sociEntries(z)
			if err != nil {
				t.Fatal(err)
			}
			idx, err := index.Build(ents, layer.Info{DataEnd: z.CompressedSize})
			if err != nil {
				t.Fatal(err)
			}
			var before, after runtime.MemStats
			runtime.GC()
			runtime.ReadMemStats(&before)
			dec := newSociDecoder(z, idx)
			// a part of every span, so that the cache ends up full (a
			// chunk that is a whole span is not cached)
			for i := range ents {
				for _, c := range ents[i].Chunks {
					if os, oe := z.SpanOut(spanOf(t, z, c.Offset, c.End)); c.InnerOffset == 0 && c.Size == oe-os {
						continue
					}
					if _, err := dec.Decode(nil, &c, blob[c.Offset:c.End]); err != nil {
						t.Fatal(err)
					}
				}
			}
			runtime.GC()
			runtime.ReadMemStats(&after)
			held := int64(after.HeapAlloc) - int64(before.HeapAlloc)
			reported := int64(dec.MemoryBytes())
			runtime.KeepAlive(dec)
			t.Logf("%d spans: the decoder holds %d bytes with its cache full, reports %d", len(z.SpanDigests), held, reported)
			if reported < held {
				t.Fatalf("the decoder reports %d bytes, holds %d", reported, held)
			}
			if reported > 2*held {
				t.Fatalf("the decoder reports %d bytes, holds only %d", reported, held)
			}
		})
	}
}

// spanOf is the span whose compressed range is [s, e).
func spanOf(t *testing.T, z *soci.Ztoc, s, e int64) int {
	for i := range z.SpanDigests {
		if a, b := z.SpanRange(i); a == s && b == e {
			return i
		}
	}
	t.Fatalf("no span at %d-%d", s, e)
	return -1
}

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
	blob, _ := sociLayer(t, 6)
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
		{"room for the decoded zTOC and its layout", zsize + decoded + int64(len(img.Ztocs[0].Files)+1)*sociLayoutBytes, true},
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

// TestSociImpliedDirectories: the directories a zTOC's names imply (it
// need not list them) are at most its entries and sociMaxImplied more:
// 100 entries of 4 KB names are not laid out as 200,000 directories.
func TestSociImpliedDirectories(t *testing.T) {
	ztoc := func(n int, name func(i int) string) *soci.Ztoc {
		z := &soci.Ztoc{Version: soci.Version, Algorithm: soci.AlgorithmGzip, CompressedSize: 1 << 20, UncompressedSize: 512 * int64(n+2),
			Checkpoints: soci.Checkpoints{SpanSize: 1 << 20, List: []soci.Checkpoint{{In: 10, Window: make([]byte, soci.WindowSize)}}},
			SpanDigests: []digest.Digest{digest.FromString("span")}}
		for i := range n {
			z.Files = append(z.Files, soci.File{Name: name(i), Type: soci.TypeDir, Offset: 512 * int64(i+1)})
		}
		zb := soci.Marshal(z)
		z, err := soci.Unmarshal(zb, 0)
		if err != nil {
			t.Fatal(err)
		}
		return z
	}
	deep := strings.Repeat("a/", 2040)
	for _, tc := range []struct {
		name string
		z    *soci.Ztoc
		want error
	}{
		{"deep names", ztoc(100, func(i int) string { return fmt.Sprintf("d%d/%sf", i, deep) }), soci.ErrTooLarge},
		{"one deep name", ztoc(1, func(int) string { return strings.Repeat("a/", 1000) + "f" }), nil},
		{"a tree without its directories", ztoc(5000, func(i int) string { return fmt.Sprintf("usr/lib/p%d/m%d/f", i/10, i) }), nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var ents []layer.Entry
			var err error
			var a, b runtime.MemStats
			runtime.ReadMemStats(&a)
			ents, err = sociEntries(tc.z)
			runtime.ReadMemStats(&b)
			if !errors.Is(err, tc.want) {
				t.Fatalf("sociEntries: %v, want %v", err, tc.want)
			}
			if err == nil {
				t.Logf("%d entries laid out as %d; %d bytes allocated", len(tc.z.Files), len(ents), b.TotalAlloc-a.TotalAlloc)
			}
			if got := b.TotalAlloc - a.TotalAlloc; got > 64<<20 {
				t.Fatalf("laying out %d entries allocated %d bytes", len(tc.z.Files), got)
			}
		})
	}
}
