package lazy

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/klauspost/compress/gzip"
	"github.com/lazysnap/lazysnap/index"
	"github.com/lazysnap/lazysnap/internal/testenv"
	"github.com/lazysnap/lazysnap/internal/testtar"
	"github.com/lazysnap/lazysnap/layer"
	"github.com/lazysnap/lazysnap/soci"
)

// bytesBlob serves a blob's ranges from memory, counting the requests.
type bytesBlob struct {
	b []byte
	n int
}

func (b *bytesBlob) ReadRange(_ context.Context, off, n int64) ([]byte, error) {
	b.n++
	return b.b[off : off+n], nil
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
			if n := len(dec.z.SpanDigests); src.n > n {
				t.Errorf("%d span fetches for %d spans", src.n, n)
			}
			if err := dec.CheckBlob(t.Context(), bytes.NewReader(blob)); err != nil {
				t.Fatalf("CheckBlob: %v", err)
			}

			// every span read (inflated) first: the opens that follow
			// fetch only what a span's own bytes could not check, the
			// spans before those whose first header starts in another
			_, dec = reopen(nil)
			want := 0
			for k := range dec.z.SpanDigests {
				s, e := dec.z.SpanRange(k)
				if _, err := dec.inflate(k, blob[s:e]); err != nil {
					t.Fatal(err)
				}
				os, oe := dec.z.SpanOut(k)
				if first, last := dec.headsEndingIn(os, oe); first < last && dec.headerStart(first) < os {
					want += k - dec.z.SpanAt(dec.headerStart(first)) + 1
				}
			}
			src = &bytesBlob{b: blob}
			for ino := index.Ino(0); int(ino) < idx.Len(); ino++ {
				if err := dec.VerifyEntry(t.Context(), ino, src); err != nil {
					t.Fatalf("inode %d, its spans read before: %v", ino, err)
				}
			}
			if src.n > want {
				t.Errorf("%d span fetches after every span was read, want at most %d (spans whose headers start in the span before)", src.n, want)
			}
			t.Logf("%d spans; %d fetched again for entry checks after all were read", len(dec.z.SpanDigests), src.n)

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
