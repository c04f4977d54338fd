package lazy

import (
	"errors"
	"fmt"
	"runtime"
	"strings"
	"testing"

	"github.com/lazysnap/lazysnap/internal/testtar"
	"github.com/lazysnap/lazysnap/layer"
	"github.com/lazysnap/lazysnap/soci"
	"github.com/opencontainers/go-digest"
)

// TestSociDecoderMemory: what a SOCI layer's decoder reports against the
// index memory budget covers what it holds with its span cache full,
// counted from the spans' real sizes: a zTOC that claims a span size of 1
// byte (which the checkpoint blob carries unchecked) holds as much.
func TestSociDecoderMemory(t *testing.T) {
	blob, _ := testtar.SociLayer(5)
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
			ents, idx := indexZtoc(t, z)
			var before, after runtime.MemStats
			runtime.GC()
			runtime.ReadMemStats(&before)
			dec := newSociDecoder(z, idx)
			// a part of every span, so that the cache ends up full (a
			// chunk that is a whole span is not cached)
			for i := range ents {
				for _, c := range ents[i].Chunks {
					if os, oe := z.SpanOut(c.Span); c.InnerOffset == 0 && c.Size == oe-os {
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

// TestSociImpliedDirectories: the directories a zTOC's names imply (it
// need not list them) are at most its entries and sociMaxImplied more:
// 100 entries of 4 KB names are not laid out as 200,000 directories.
func TestSociImpliedDirectories(t *testing.T) {
	ztoc := func(n int, name func(i int) string) *soci.Ztoc {
		z := &soci.Ztoc{Version: soci.Version, Algorithm: soci.AlgorithmGzip, CompressedSize: 1 << 20, UncompressedSize: 512 * int64(n+2),
			Checkpoints: soci.Checkpoints{SpanSize: 1 << 20, List: []soci.Checkpoint{{In: 10, Window: make([]byte, soci.WindowSize)}}},
			SpanDigests: []digest.Digest{digest.FromString("span")}}
		for i := range n {
			z.Files = append(z.Files, soci.File{Name: name(i), Type: layer.TypeDir, Offset: 512 * int64(i+1)})
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
