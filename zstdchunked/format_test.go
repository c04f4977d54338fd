package zstdchunked_test

import (
	"bytes"
	"io"
	"testing"

	refestargz "github.com/containerd/stargz-snapshotter/estargz"
	refzstd "github.com/containerd/stargz-snapshotter/estargz/zstdchunked"
	"github.com/klauspost/compress/zstd"
	"github.com/lazysnap/lazysnap/internal/testformat"
	"github.com/lazysnap/lazysnap/zstdchunked"
	"github.com/opencontainers/go-digest"
)

// TestFormat runs the format conformance suite on zstd:chunked layers.
func TestFormat(t *testing.T) {
	testformat.Run(t, testformat.Case{Format: zstdchunked.Format{}, Writer: zstdchunked.Writer{}})
}

// TestWriter runs the writer suite on zstdchunked.Writer, and checks what
// it writes beyond it: the annotations name the manifest's digest and
// locate it (both layouts' names), the footer is the legacy layout's,
// this package's decoder reads every file, and the eStargz library opens
// the blob and verifies it against the digest of its TOC JSON.
func TestWriter(t *testing.T) {
	testformat.RunWriter(t, testformat.WriterCase{Writer: zstdchunked.Writer{}, Format: zstdchunked.Format{},
		Decompress: func(b []byte) ([]byte, error) {
			zr, err := zstd.NewReader(bytes.NewReader(b))
			if err != nil {
				return nil, err
			}
			defer zr.Close()
			return io.ReadAll(zr)
		},
		Check: func(t *testing.T, w testformat.Wrote) {
			res, blob := w.Written, w.Out
			ann := res.Desc.Annotations
			if d, ok, err := zstdchunked.ManifestDigest(ann); err != nil || !ok || d != res.TOCDigest {
				t.Fatalf("annotations %v: digest %s %v %v, want %s", ann, d, ok, err, res.TOCDigest)
			}
			for _, k := range []string{zstdchunked.ManifestPositionAnnotation, zstdchunked.LegacyManifestPositionAnnotation} {
				p, err := zstdchunked.ParsePosition(ann[k])
				if err != nil {
					t.Fatal(err)
				}
				if got := digest.SHA256.FromBytes(blob[p.Offset : p.Offset+p.Size]); got != res.TOCDigest {
					t.Errorf("%s %v locates bytes of digest %s", k, p, got)
				}
			}
			c, f, err := decode(blob, res.TOCDigest)
			if err != nil {
				t.Fatal(err)
			}
			if !f.Legacy {
				t.Errorf("footer %+v: want the legacy layout", f)
			}
			checkContents(t, blob, c, w.Src)

			r, err := refestargz.Open(sectionOf(blob), refestargz.WithDecompressors(new(refzstd.Decompressor)))
			if err != nil {
				t.Fatalf("reference Open: %v", err)
			}
			p, _ := zstdchunked.ParsePosition(ann[zstdchunked.LegacyManifestPositionAnnotation])
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
			testformat.ReferenceReads(t, r, v, w.Src)
		}})
}
