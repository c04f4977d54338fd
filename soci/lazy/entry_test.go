package lazy

import (
	"archive/tar"
	"bytes"
	"cmp"
	"context"
	"errors"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/klauspost/compress/gzip"
	"github.com/lazysnap/lazysnap/index"
	"github.com/lazysnap/lazysnap/internal/testenv"
	"github.com/lazysnap/lazysnap/internal/testtar"
	"github.com/lazysnap/lazysnap/layer"
	"github.com/lazysnap/lazysnap/soci"
)

// bytesBlob serves a blob's ranges from memory, counting the requests.
type bytesBlob struct {
	b      []byte
	n      int        // requests
	ranges [][2]int64 // what each request read
}

func (b *bytesBlob) ReadRange(_ context.Context, off, n int64) ([]byte, error) {
	b.n++
	b.ranges = append(b.ranges, [2]int64{off, off + n})
	return b.b[off : off+n], nil
}

// fetched returns the bytes read, and how many of them were read before.
func (b *bytesBlob) fetched() (total, again int64) {
	rs := slices.Clone(b.ranges)
	slices.SortFunc(rs, func(x, y [2]int64) int { return cmp.Compare(x[0], y[0]) })
	end := int64(0)
	for _, r := range rs {
		total += r[1] - r[0]
		again += max(0, min(end, r[1])-r[0])
		end = max(end, r[1])
	}
	return total, again
}

// indexZtoc lays z's entries out and indexes them, as Open does.
func indexZtoc(t testing.TB, z *soci.Ztoc) ([]layer.Entry, *index.Index) {
	t.Helper()
	ents, err := sociEntries(z)
	if err != nil {
		t.Fatal(err)
	}
	idx, err := index.Build(ents, layer.Info{DataEnd: z.CompressedSize})
	if err != nil {
		t.Fatal(err)
	}
	return ents, idx
}

// openZtoc indexes z's layer and makes its decoder, as Open does.
func openZtoc(t testing.TB, z *soci.Ztoc) (*index.Index, *sociDecoder) {
	t.Helper()
	_, idx := indexZtoc(t, z)
	return idx, newSociDecoder(z, idx)
}

// rootfsLayer is the Debian rootfs tar (scripts/deps.sh builds it)
// gzipped, cached next to it; the test is skipped without it.
func rootfsLayer(t testing.TB) []byte {
	const tarPath = "/var/tmp/lazysnap-rootfs/bookworm.tar"
	if testing.Short() {
		t.Skip("the Debian rootfs layer is large")
	}
	gzPath := "/var/tmp/lazysnap-socitrust/bookworm.tar.gz"
	if b, err := os.ReadFile(gzPath); err == nil {
		return b
	}
	raw := testenv.ReadFile(t, tarPath, "make rootfs")
	var buf bytes.Buffer
	zw, _ := gzip.NewWriterLevel(&buf, gzip.BestSpeed)
	zw.Write(raw)
	zw.Close()
	if err := os.MkdirAll(filepath.Dir(gzPath), 0o755); err == nil {
		if os.WriteFile(gzPath+".tmp", buf.Bytes(), 0o644) == nil {
			os.Rename(gzPath+".tmp", gzPath)
		}
	}
	return buf.Bytes()
}

// TestSociVerifyEntries: with an honest zTOC, every inode of a layer
// passes VerifyEntry and the complete layer passes CheckBlob, whatever
// the span size (headers, PAX records included, that straddle two spans
// at small ones), on a real Debian tree too (hardlinks, symlinks, devices,
// long names); a span's headers are fetched and checked once however many
// inodes they hold. The same layers with one entry's mode forged fail
// VerifyEntry for that inode (layer.ErrMismatch) and CheckBlob.
func TestSociVerifyEntries(t *testing.T) {
	for _, tc := range []struct {
		name string
		blob func(t testing.TB) []byte
		span int64
	}{
		{"small files, 64 KiB spans", func(t testing.TB) []byte { b, _ := testtar.SociLayer(1); return b }, 64 << 10},
		{"small files, 4 KiB spans", func(t testing.TB) []byte { b, _ := testtar.SociLayer(1); return b }, 4 << 10},
		{"hostile layer, 2 KiB spans", func(testing.TB) []byte { return testtar.HostileLayer() }, 2 << 10},
		{"Debian rootfs", rootfsLayer, 4 << 20},
	} {
		t.Run(tc.name, func(t *testing.T) {
			blob := tc.blob(t)
			z, err := soci.Build(bytes.NewReader(blob), soci.BuildOptions{SpanSize: tc.span})
			if err != nil {
				t.Fatal(err)
			}
			reopen := func(tamper func(z *soci.Ztoc)) (*index.Index, *sociDecoder) {
				zc := *z
				zc.Files = slices.Clone(z.Files)
				if tamper != nil {
					tamper(&zc)
				}
				return openZtoc(t, &zc)
			}
			idx, dec := reopen(nil)
			src := &bytesBlob{b: blob}
			for ino := index.Ino(0); int(ino) < idx.Len(); ino++ {
				if err := dec.VerifyEntry(t.Context(), ino, src); err != nil {
					t.Fatalf("inode %d: %v", ino, err)
				}
			}
			// a span's headers checked in a few requests for prefixes
			// that grow, and what is read is never read again
			if n := len(dec.z.SpanDigests); src.n > 3*n {
				t.Errorf("%d requests for %d spans", src.n, n)
			}
			// (but a byte that two spans share: one whose bits start the
			// next)
			if total, again := src.fetched(); again > int64(len(dec.z.SpanDigests)) {
				t.Errorf("%d of the %d bytes fetched were fetched before", again, total)
			}
			if err := dec.CheckBlob(t.Context(), bytes.NewReader(blob)); err != nil {
				t.Fatalf("CheckBlob: %v", err)
			}

			// every span read (inflated) first: the opens that follow
			// fetch only what a span's own bytes could not check, the
			// spans before those whose first header starts in another
			_, dec = reopen(nil)
			want, wantBytes := 0, int64(0)
			for k := range dec.z.SpanDigests {
				s, e := dec.z.SpanRange(k)
				if _, err := dec.inflate(k, blob[s:e]); err != nil {
					t.Fatal(err)
				}
				os, oe := dec.z.SpanOut(k)
				if first, last := dec.headsEndingIn(os, oe); first < last && dec.headerStart(first) < os {
					j := dec.z.SpanAt(dec.headerStart(first))
					want += 3 * (k - j + 1)
					s, _ := dec.z.SpanRange(j)
					_, e := dec.z.SpanRange(k)
					wantBytes += e - s + 1
				}
			}
			src = &bytesBlob{b: blob}
			for ino := index.Ino(0); int(ino) < idx.Len(); ino++ {
				if err := dec.VerifyEntry(t.Context(), ino, src); err != nil {
					t.Fatalf("inode %d, its spans read before: %v", ino, err)
				}
			}
			total, _ := src.fetched()
			if src.n > want || total > wantBytes {
				t.Errorf("%d requests, %d bytes after every span was read, want at most %d, %d (spans whose headers start in the span before, and that one)", src.n, total, want, wantBytes)
			}
			t.Logf("%d spans; %d requests, %d bytes for entry checks after all were read", len(dec.z.SpanDigests), src.n, total)

			// the last regular file's mode forged
			var forged string
			idx, dec = reopen(func(z *soci.Ztoc) {
				for i := len(z.Files) - 1; i >= 0; i-- {
					if f := &z.Files[i]; f.Type == layer.TypeReg && f.Size > 0 {
						f.Mode ^= 0o4000
						forged = f.Name
						return
					}
				}
			})
			clean, _ := soci.Clean(forged)
			ino, ok := idx.LookupPath(clean)
			if !ok {
				t.Fatalf("no inode for %q", forged)
			}
			err = dec.VerifyEntry(t.Context(), ino, src)
			if !errors.Is(err, layer.ErrMismatch) || !strings.Contains(err.Error(), "mode") {
				t.Fatalf("VerifyEntry of %q, whose mode is forged: %v, want layer.ErrMismatch", forged, err)
			}
			if err := dec.CheckBlob(t.Context(), bytes.NewReader(blob)); !errors.Is(err, errZtocMismatch) || !strings.Contains(err.Error(), "mode") {
				t.Fatalf("CheckBlob with %q's mode forged: %v, want errZtocMismatch", forged, err)
			}
		})
	}
}

// BenchmarkSociEntryChecks: what the entry checks cost on the Debian
// rootfs layer (4 MiB spans), next to inflating every span once, which a
// full read of the layer costs anyway: VerifyEntry of every inode from a
// cold decoder (each span holding headers fetched from memory, inflated
// and parsed once), and CheckBlob of the complete layer (sequential
// inflate, every header compared, every window and span sum checked).
func BenchmarkSociEntryChecks(b *testing.B) {
	blob := rootfsLayer(b)
	z, err := soci.Build(bytes.NewReader(blob), soci.BuildOptions{SpanSize: 4 << 20})
	if err != nil {
		b.Fatal(err)
	}
	_, idx := indexZtoc(b, z)
	b.Logf("%d entries, %d spans, %d compressed bytes", len(z.Files), len(z.SpanDigests), len(blob))
	b.Run("inflate every span", func(b *testing.B) {
		b.SetBytes(int64(len(blob)))
		for range b.N {
			dec := newSociDecoder(z, idx)
			for k := range dec.z.SpanDigests {
				s, e := dec.z.SpanRange(k)
				if _, err := dec.inflate(k, blob[s:e]); err != nil {
					b.Fatal(err)
				}
			}
		}
	})
	b.Run("verify every inode", func(b *testing.B) {
		b.SetBytes(int64(len(blob)))
		for range b.N {
			dec := newSociDecoder(z, idx)
			src := &bytesBlob{b: blob}
			for ino := index.Ino(0); int(ino) < idx.Len(); ino++ {
				if err := dec.VerifyEntry(b.Context(), ino, src); err != nil {
					b.Fatal(err)
				}
			}
		}
	})
	b.Run("CheckBlob", func(b *testing.B) {
		b.SetBytes(int64(len(blob)))
		dec := newSociDecoder(z, idx)
		for range b.N {
			if err := dec.CheckBlob(b.Context(), bytes.NewReader(blob)); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// flakyBlob serves a blob through bytesBlob, the first read of each range
// with a byte of the range's first KiB flipped (a registry or cache that
// got it wrong once), and counts invalidations.
type flakyBlob struct {
	bytesBlob
	bad     map[int64]bool // ranges served wrong, by offset
	invalid int
}

func (b *flakyBlob) ReadRange(ctx context.Context, off, n int64) ([]byte, error) {
	raw, _ := b.bytesBlob.ReadRange(ctx, off, n)
	if b.bad[off] {
		return raw, nil
	}
	b.bad[off] = true
	out := bytes.Clone(raw)
	out[min(n-1, 700)] ^= 0xff
	return out, nil
}

func (b *flakyBlob) Invalidate(off, n int64) { b.invalid++ }

// TestSociEntryCheckPrefix: the header of a symlink or a directory at the
// start of a large span is checked from a prefix of the span's bytes, not
// the whole span; a file whose content starts in the span fetches the
// whole span (its read needs it), once, its prefix included; and a
// prefix the registry got wrong is not the verdict: the whole span,
// verified against its digest, is (fetched again once it fails it).
func TestSociEntryCheckPrefix(t *testing.T) {
	var tb bytes.Buffer
	tw := tar.NewWriter(&tb)
	hdr := func(h *tar.Header, body []byte) {
		h.ModTime, h.Mode = time.Unix(1700000000, 0), 0o755
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		tw.Write(body)
	}
	rnd := make([]byte, 3<<20)
	rand.NewChaCha8([32]byte{1}).Read(rnd)
	hdr(&tar.Header{Name: "a/", Typeflag: tar.TypeDir}, nil)
	hdr(&tar.Header{Name: "a/link", Typeflag: tar.TypeSymlink, Linkname: "big"}, nil)
	hdr(&tar.Header{Name: "a/big", Typeflag: tar.TypeReg, Size: int64(len(rnd))}, rnd)
	hdr(&tar.Header{Name: "a/small", Typeflag: tar.TypeReg, Size: 5}, []byte("small"))
	tw.Close()
	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	zw.Write(tb.Bytes())
	zw.Close()
	blob := gz.Bytes()
	z, err := soci.Build(bytes.NewReader(blob), soci.BuildOptions{SpanSize: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	s0, e0 := z.SpanRange(0)

	for _, tc := range []struct {
		name     string
		path     string
		maxBytes int64 // fetched at most
		whole    bool  // the whole first span fetched
	}{
		{"directory", "a", 128 << 10, false},
		{"symlink", "a/link", 128 << 10, false},
		{"file starting in the span", "a/big", e0 - s0 + 1, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			idx, dec := openZtoc(t, z)
			ino, ok := idx.LookupPath(tc.path)
			if !ok {
				t.Fatalf("%s not in the index", tc.path)
			}
			src := &bytesBlob{b: blob}
			if err := dec.VerifyEntry(t.Context(), ino, src); err != nil {
				t.Fatal(err)
			}
			total, again := src.fetched()
			if total > tc.maxBytes || again > 0 {
				t.Errorf("%d bytes fetched (%d again), want at most %d; the span is %d", total, again, tc.maxBytes, e0-s0)
			}
			if got := dec.cachedSpan(0) != nil; got != tc.whole {
				t.Errorf("span 0 held whole: %v, want %v", got, tc.whole)
			}
			// the whole span after the prefix fetches only what it lacks
			if _, err := dec.spanBytes(t.Context(), 0, src); err != nil {
				t.Fatal(err)
			}
			if total, again := src.fetched(); again > 0 || total > e0-s0 {
				t.Errorf("after the whole span: %d bytes fetched (%d again), the span is %d", total, again, e0-s0)
			}
		})
	}

	t.Run("prefix served wrong", func(t *testing.T) {
		idx, dec := openZtoc(t, z)
		ino, _ := idx.LookupPath("a/link")
		src := &flakyBlob{bytesBlob: bytesBlob{b: blob}, bad: map[int64]bool{}}
		if err := dec.VerifyEntry(t.Context(), ino, src); err != nil {
			t.Fatalf("a wrong prefix decided the verdict: %v", err)
		}
		if src.invalid == 0 || dec.cachedSpan(0) == nil {
			t.Errorf("invalidations %d, span held %v: want the whole span fetched again and verified", src.invalid, dec.cachedSpan(0) != nil)
		}
		if d := dec.vspans[0]; d.err != nil || d.next < 2 {
			t.Errorf("span 0's checks: next %d, err %v", d.next, d.err)
		}
	})
}
