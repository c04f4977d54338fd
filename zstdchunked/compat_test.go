package zstdchunked_test

// Interoperability with the eStargz library's zstdchunked package
// (github.com/containerd/stargz-snapshotter/estargz/zstdchunked), an oracle
// only: what we write opens and verifies there, what it writes opens and
// verifies here.

import (
	"bytes"
	"io"
	"strings"
	"testing"

	refestargz "github.com/containerd/stargz-snapshotter/estargz"
	refzstd "github.com/containerd/stargz-snapshotter/estargz/zstdchunked"
	"github.com/klauspost/compress/zstd"
	"github.com/lazysnap/lazysnap/estargz"
	"github.com/lazysnap/lazysnap/internal/testtar"
	"github.com/lazysnap/lazysnap/zstdchunked"
	"github.com/opencontainers/go-digest"
)

// TestReferenceOpensOurBlobs: the library opens our blobs, verifies their
// TOC against the digest of the TOC JSON and every chunk, and reads every
// file as the source has it.
func TestReferenceOpensOurBlobs(t *testing.T) {
	tarball := testtar.Synthetic(5 << 20)
	src, err := testtar.Read(tarball)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		opts []estargz.ConvertOption
	}{
		{"defaults", nil},
		{"small chunks", []estargz.ConvertOption{estargz.WithChunkSize(100 << 10)}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			blob, res := convert(t, tarball, tc.opts...)
			r, err := refestargz.Open(sectionOf(blob), refestargz.WithDecompressors(new(refzstd.Decompressor)))
			if err != nil {
				t.Fatalf("reference Open: %v", err)
			}
			p, _ := zstdchunked.ParsePosition(res.Annotations[zstdchunked.LegacyManifestPositionAnnotation])
			zr, err := zstd.NewReader(bytes.NewReader(blob[p.Offset : p.Offset+p.Size]))
			if err != nil {
				t.Fatal(err)
			}
			tocDigest, err := digest.SHA256.FromReader(zr)
			zr.Close()
			if err != nil {
				t.Fatal(err)
			}
			v, err := r.VerifyTOC(tocDigest)
			if err != nil {
				t.Fatalf("reference VerifyTOC: %v", err)
			}
			files := 0
			for _, name := range testtar.Names(src) {
				s := src[name]
				if s.Header.Typeflag != '0' || strings.HasPrefix(name, ".") {
					continue
				}
				sr, err := r.OpenFile(name)
				if err != nil {
					t.Errorf("reference: OpenFile %q: %v", name, err)
					continue
				}
				got, err := io.ReadAll(sr)
				if err != nil || !bytes.Equal(got, s.Content) {
					t.Errorf("reference: %q content differs (%v)", name, err)
					continue
				}
				for off := int64(0); off < int64(len(s.Content)); {
					ce, ok := r.ChunkEntryForOffset(name, off)
					if !ok {
						t.Fatalf("reference: %q no chunk at %d", name, off)
					}
					cv, err := v.Verifier(ce)
					if err != nil {
						t.Fatalf("reference: %q verifier: %v", name, err)
					}
					cv.Write(s.Content[ce.ChunkOffset : ce.ChunkOffset+ce.ChunkSize])
					if !cv.Verified() {
						t.Errorf("reference: %q chunk at %d does not verify", name, off)
					}
					off = ce.ChunkOffset + ce.ChunkSize
				}
				files++
			}
			if files == 0 {
				t.Fatal("no file compared")
			}
		})
	}
}

// TestWeOpenReferenceBlobs: blobs the library's zstdchunked writer makes
// (the legacy layout, eStargz TOC entries without endOffset) decode here,
// verified against its manifest-checksum and against its eStargz TOC
// digest, and read as the source has them.
func TestWeOpenReferenceBlobs(t *testing.T) {
	tarball := testtar.Synthetic(5 << 20)
	src, err := testtar.Read(tarball)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		opts []refestargz.Option
	}{
		{"defaults", nil},
		{"small chunks", []refestargz.Option{refestargz.WithChunkSize(100 << 10)}},
		{"min chunk size (innerOffset)", []refestargz.Option{refestargz.WithMinChunkSize(64 << 10)}},
		{"prioritized", []refestargz.Option{refestargz.WithPrioritizedFiles([]string{"etc/hostname"})}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ann := map[string]string{}
			comp := struct {
				*refzstd.Compressor
				*refzstd.Decompressor
			}{&refzstd.Compressor{CompressionLevel: zstd.SpeedDefault, Metadata: ann}, new(refzstd.Decompressor)}
			b, err := refestargz.Build(sectionOf(tarball), append(tc.opts, refestargz.WithCompression(comp))...)
			if err != nil {
				t.Fatal(err)
			}
			blob, err := io.ReadAll(b)
			if err != nil {
				t.Fatal(err)
			}
			d, ok, err := zstdchunked.ManifestDigest(ann)
			if !ok || err != nil {
				t.Fatalf("annotations %v: %v", ann, err)
			}
			for _, dg := range []digest.Digest{d, b.TOCDigest()} {
				c, f, err := decode(blob, dg)
				if err != nil {
					t.Fatalf("verified against %s: %v", dg, err)
				}
				if !f.Legacy {
					t.Errorf("footer %+v, want legacy", f)
				}
				checkContents(t, blob, c, src)
			}
		})
	}
}
