package soci_test

import (
	"errors"
	"fmt"
	"runtime"
	"strings"
	"testing"
	"time"

	flatbuffers "github.com/google/flatbuffers/go"
	"github.com/lazysnap/lazysnap/layer"
	"github.com/lazysnap/lazysnap/soci"
	"github.com/lazysnap/lazysnap/soci/internal/fb"
	"github.com/opencontainers/go-digest"
)

// allocated returns the bytes of heap f allocates (TotalAlloc: freed or
// not). No test of the package runs in parallel with it.
func allocated(f func()) int64 {
	var a, b runtime.MemStats
	runtime.ReadMemStats(&a)
	f()
	runtime.ReadMemStats(&b)
	return int64(b.TotalAlloc - a.TotalAlloc)
}

// withinBound fails t unless decoding zb allocated at most what Unmarshal
// promises, and returns the ratio to the zTOC's size.
func withinBound(t testing.TB, zb []byte, got int64) float64 {
	t.Helper()
	if limit := soci.DecodeBound(len(zb)); got > limit {
		t.Fatalf("decoding a zTOC of %d bytes allocated %d bytes (%.1fx), more than the bound %d", len(zb), got, float64(got)/float64(len(zb)), limit)
	}
	return float64(got) / float64(len(zb))
}

// craft is a hostile zTOC: n directory entries over a layer of one span,
// whose records are shared as the flags say (FlatBuffers refers to tables,
// strings and vectors by offset, so many entries can name one record).
type craft struct {
	n                       int
	name                    string // each entry's own name is this and its number
	long                    string // the shared string, or each entry's PAX values
	table, names, link, pax bool   // entries share their table, name, link name, PAX vector
	ownPAX                  bool   // each entry has two PAX records of its own
	onePAX                  bool   // each entry's PAX vector names one record 8 times
	emptyPAX                bool   // each entry has one PAX record with neither key nor value
	minimal                 bool   // entries have a type and nothing else
	noCheckpoints           bool   // no checkpoint blob (small fuzz seeds: entries are read before it)
	digest                  bool   // the span digests are one string
	nameInName              bool   // each name starts inside another's bytes
}

func (c craft) bytes() []byte {
	bl := flatbuffers.NewBuilder(1 << 16)
	var sharedName, sharedLink, sharedPAX, sharedTable, prevName flatbuffers.UOffsetT
	shared := func(o *flatbuffers.UOffsetT, mk func() flatbuffers.UOffsetT) flatbuffers.UOffsetT {
		if *o == 0 {
			*o = mk()
		}
		return *o
	}
	xattr := func(k, v string) flatbuffers.UOffsetT {
		ko, vo := bl.CreateString(k), bl.CreateString(v)
		fb.XattrStart(bl)
		fb.XattrAddKey(bl, ko)
		fb.XattrAddValue(bl, vo)
		return fb.XattrEnd(bl)
	}
	vector := func(start func(*flatbuffers.Builder, int) flatbuffers.UOffsetT, offs []flatbuffers.UOffsetT) flatbuffers.UOffsetT {
		start(bl, len(offs))
		for i := len(offs) - 1; i >= 0; i-- {
			bl.PrependUOffsetT(offs[i])
		}
		return bl.EndVector(len(offs))
	}
	two := func() flatbuffers.UOffsetT {
		return vector(fb.FileMetadataStartXattrsVector, []flatbuffers.UOffsetT{xattr("SCHILY.xattr.user.a", c.long), xattr("SCHILY.xattr.user.b", c.long)})
	}
	entries := make([]flatbuffers.UOffsetT, c.n)
	for i := range entries {
		if c.table && sharedTable != 0 {
			entries[i] = sharedTable
			continue
		}
		var name, link, pax flatbuffers.UOffsetT
		if c.minimal {
			typ := bl.CreateString(layer.TypeDir)
			if c.emptyPAX {
				fb.XattrStart(bl)
				pax = vector(fb.FileMetadataStartXattrsVector, []flatbuffers.UOffsetT{fb.XattrEnd(bl)})
			}
			fb.FileMetadataStart(bl)
			fb.FileMetadataAddType(bl, typ)
			if pax != 0 {
				fb.FileMetadataAddXattrs(bl, pax)
			}
			entries[i] = fb.FileMetadataEnd(bl)
			continue
		}
		switch {
		case c.names:
			name = shared(&sharedName, func() flatbuffers.UOffsetT { return bl.CreateString(c.long) })
		case c.nameInName:
			if i%2 == 0 {
				prevName = bl.CreateString("abcd\x10\x00\x00\x00" + strings.Repeat("n", 16))
				name = prevName
			} else {
				name = prevName - 8 // 8 bytes into the previous entry's name: its bytes 4-8 are the length 16
			}
		default:
			name = bl.CreateString(fmt.Sprint(c.name, i))
		}
		typ := bl.CreateString(layer.TypeDir)
		if c.link {
			link = shared(&sharedLink, func() flatbuffers.UOffsetT { return bl.CreateString(c.long) })
		}
		switch {
		case c.pax:
			pax = shared(&sharedPAX, two)
		case c.ownPAX:
			pax = two()
		case c.onePAX:
			one := xattr("SCHILY.xattr.user.a", c.long)
			pax = vector(fb.FileMetadataStartXattrsVector, []flatbuffers.UOffsetT{one, one, one, one, one, one, one, one})
		}
		fb.FileMetadataStart(bl)
		fb.FileMetadataAddName(bl, name)
		fb.FileMetadataAddType(bl, typ)
		if link != 0 {
			fb.FileMetadataAddLinkname(bl, link)
		}
		fb.FileMetadataAddUncompressedOffset(bl, 512*int64(i+1))
		if pax != 0 {
			fb.FileMetadataAddXattrs(bl, pax)
		}
		entries[i] = fb.FileMetadataEnd(bl)
		sharedTable = entries[i]
	}
	mv := vector(fb.TOCStartMetadataVector, entries)
	fb.TOCStart(bl)
	fb.TOCAddMetadata(bl, mv)
	toc := fb.TOCEnd(bl)

	spans := 1
	if c.digest {
		spans = c.n
	}
	cps := soci.Checkpoints{SpanSize: 1 << 20}
	for i := range spans {
		cps.List = append(cps.List, soci.Checkpoint{In: 10 + int64(i), Out: int64(i) * 512, Window: make([]byte, soci.WindowSize)})
	}
	var cpv flatbuffers.UOffsetT
	if !c.noCheckpoints {
		cpv = bl.CreateByteVector(cps.Marshal())
	}
	d := bl.CreateString(digest.FromString("span").String())
	ds := make([]flatbuffers.UOffsetT, spans)
	for i := range ds {
		ds[i] = d
		if !c.digest {
			ds[i] = bl.CreateString(digest.FromString(fmt.Sprint(i)).String())
		}
	}
	dv := vector(fb.CompressionInfoStartSpanDigestsVector, ds)
	fb.CompressionInfoStart(bl)
	fb.CompressionInfoAddMaxSpanId(bl, int32(spans-1))
	fb.CompressionInfoAddSpanDigests(bl, dv)
	if cpv != 0 {
		fb.CompressionInfoAddCheckpoints(bl, cpv)
	}
	fb.CompressionInfoAddCompressionAlgorithm(bl, fb.CompressionAlgorithmGzip)
	ci := fb.CompressionInfoEnd(bl)
	version := bl.CreateString(soci.Version)
	fb.ZtocStart(bl)
	fb.ZtocAddVersion(bl, version)
	fb.ZtocAddToc(bl, toc)
	fb.ZtocAddCompressedArchiveSize(bl, 1<<20)
	fb.ZtocAddUncompressedArchiveSize(bl, 512*int64(c.n+2))
	fb.ZtocAddCompressionInfo(bl, ci)
	bl.Finish(fb.ZtocEnd(bl))
	return bl.FinishedBytes()
}

// TestUnmarshalAliased: a zTOC whose entries share a record (the issue's
// 139,544-byte zTOC allocated 413 MiB) is refused with ErrAliased, and
// refusing it allocates little.
func TestUnmarshalAliased(t *testing.T) {
	long := strings.Repeat("x", 4000)
	for _, tc := range []struct {
		name string
		c    craft
	}{
		{"one table", craft{n: 30000, long: long, names: true, table: true}},
		{"one name", craft{n: 20000, long: long, names: true}},
		{"one link name", craft{n: 20000, name: "d", long: long, link: true}},
		{"one PAX vector", craft{n: 20000, name: "d", long: long, pax: true}},
		{"one PAX record eight times", craft{n: 2000, name: "d", long: long, onePAX: true}},
		{"one span digest", craft{n: 1000, name: "d", digest: true}},
		{"a name inside another", craft{n: 1000, nameInName: true}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			zb := tc.c.bytes()
			var err error
			got := allocated(func() { _, err = soci.Unmarshal(zb, 0) })
			if !errors.Is(err, soci.ErrAliased) || !errors.Is(err, soci.ErrFormat) {
				t.Errorf("Unmarshal: %v, want ErrAliased", err)
			}
			t.Logf("zTOC of %d bytes refused after allocating %d bytes (%.2fx): %v", len(zb), got, withinBound(t, zb, got), err)
		})
	}
}

// TestUnmarshalNotAliased: the same zTOCs with every record its own are
// read, within the bound.
func TestUnmarshalNotAliased(t *testing.T) {
	for _, tc := range []struct {
		name string
		c    craft
	}{
		{"long names", craft{n: 2000, name: strings.Repeat("x", 4000)}},
		{"short names", craft{n: 20000, name: "x"}},
		{"PAX records", craft{n: 2000, name: "d", long: strings.Repeat("v", 100), ownPAX: true}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			zb := tc.c.bytes()
			var z *soci.Ztoc
			var err error
			got := allocated(func() { z, err = soci.Unmarshal(zb, 0) })
			if err != nil {
				t.Fatal(err)
			}
			if len(z.Files) != tc.c.n {
				t.Fatalf("%d entries, want %d", len(z.Files), tc.c.n)
			}
			t.Logf("%d entries, zTOC of %d bytes: decoding allocated %d bytes (%.2fx)", tc.c.n, len(zb), got, withinBound(t, zb, got))
		})
	}
}

// TestUnmarshalDense: zTOCs of the smallest entries the format allows
// (each a table with a type and nothing else, its offset left out so that
// Validate refuses it after everything is decoded) are the most a buffer
// can decode into: within the bound.
func TestUnmarshalDense(t *testing.T) {
	for _, tc := range []struct {
		name string
		c    craft
	}{
		{"minimal entries", craft{n: 100000, minimal: true}},
		{"minimal entries with a PAX record", craft{n: 100000, minimal: true, emptyPAX: true}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			zb := tc.c.bytes()
			var err error
			got := allocated(func() { _, err = soci.Unmarshal(zb, 0) })
			if !errors.Is(err, soci.ErrInvalid) {
				t.Fatalf("Unmarshal: %v, want ErrInvalid", err)
			}
			t.Logf("%d entries, zTOC of %d bytes: decoding allocated %d bytes (%.2fx)", tc.c.n, len(zb), got, withinBound(t, zb, got))
		})
	}
}

// largeZtoc is a zTOC of 100,000 entries that look like a Python tree's.
func largeZtoc(t testing.TB) []byte {
	const n = 100000
	z := &soci.Ztoc{Version: soci.Version, BuildTool: "test", Algorithm: soci.AlgorithmGzip, CompressedSize: 64 << 20}
	off := int64(0)
	mt := time.Date(2024, 5, 1, 12, 0, 0, 0, time.UTC)
	for i := range n {
		f := soci.File{Name: fmt.Sprintf("usr/lib/python3/dist-packages/pkg%03d/module_%05d.py", i/1000, i), Type: layer.TypeReg,
			Size: int64(i % 700), Mode: 0o644, Uname: "root", Gname: "root", ModTime: mt}
		if i%1000 == 0 {
			f = soci.File{Name: fmt.Sprintf("usr/lib/python3/dist-packages/pkg%03d/", i/1000), Type: layer.TypeDir, Mode: 0o755, ModTime: mt}
		}
		if i%100 == 7 {
			f.PAX = map[string]string{"SCHILY.xattr.security.capability": "\x01\x00\x00\x02\x00\x20\x00\x00"}
		}
		off += 512
		f.Offset = off
		off += (f.Size + 511) &^ 511
		z.Files = append(z.Files, f)
	}
	z.UncompressedSize = off + 1024
	z.Checkpoints = soci.Checkpoints{SpanSize: 4 << 20}
	for out := int64(0); out < z.UncompressedSize; out += 4 << 20 {
		k := int64(len(z.SpanDigests))
		z.Checkpoints.List = append(z.Checkpoints.List, soci.Checkpoint{In: 10 + k*(1<<20), Out: out, Window: make([]byte, soci.WindowSize)})
		z.SpanDigests = append(z.SpanDigests, digest.FromString(fmt.Sprint(k)))
	}
	return soci.Marshal(z)
}

// TestUnmarshalLargeZtoc: a zTOC of a layer of many real-looking entries
// is read within the bound (the ratio is logged).
func TestUnmarshalLargeZtoc(t *testing.T) {
	zb := largeZtoc(t)
	var z *soci.Ztoc
	var err error
	got := allocated(func() { z, err = soci.Unmarshal(zb, 0) })
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%d entries, zTOC of %d bytes: decoding allocated %d bytes (%.2fx)", len(z.Files), len(zb), got, withinBound(t, zb, got))
}

// TestUnmarshalReserve: Reserve is given what the decoded zTOC holds
// (measured as the heap it keeps alive), before it is allocated; its
// error fails the decode with nothing copied.
func TestUnmarshalReserve(t *testing.T) {
	for _, tc := range []struct {
		name string
		zb   []byte
	}{
		{"large", largeZtoc(t)},
		{"long names", craft{n: 2000, name: strings.Repeat("x", 4000)}.bytes()},
		{"PAX records", craft{n: 2000, name: "d", long: strings.Repeat("v", 100), ownPAX: true}.bytes()},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var reserved int64
			var a, b runtime.MemStats
			runtime.GC()
			runtime.ReadMemStats(&a)
			z, err := soci.UnmarshalLimits(tc.zb, soci.Limits{Reserve: func(n int64) error { reserved = n; return nil }})
			if err != nil {
				t.Fatal(err)
			}
			runtime.GC()
			runtime.ReadMemStats(&b)
			kept := int64(b.HeapAlloc) - int64(a.HeapAlloc)
			runtime.KeepAlive(z)
			t.Logf("reserved %d bytes, the decoded zTOC keeps %d", reserved, kept)
			if reserved < kept*3/4 || reserved > kept*3/2 {
				t.Fatalf("reserved %d bytes, the decoded zTOC keeps %d", reserved, kept)
			}
			var got int64
			errFull := errors.New("full")
			allocs := allocated(func() {
				_, err = soci.UnmarshalLimits(tc.zb, soci.Limits{Reserve: func(n int64) error { got = n; return errFull }})
			})
			if !errors.Is(err, errFull) || !errors.Is(err, soci.ErrTooLarge) || got != reserved {
				t.Fatalf("refused reservation of %d bytes: %v", got, err)
			}
			if allocs > int64(len(tc.zb))/4+64<<10 {
				t.Fatalf("a refused reservation still allocated %d bytes", allocs)
			}
		})
	}
}
