package convert_test

import (
	"bytes"
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"testing"

	"github.com/klauspost/compress/zstd"
	"github.com/lazysnap/lazysnap/convert"
	"github.com/lazysnap/lazysnap/estargz"
	"github.com/lazysnap/lazysnap/internal/testimage"
	"github.com/lazysnap/lazysnap/internal/testtar"
	"github.com/lazysnap/lazysnap/zstdchunked"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// nopSink discards a TOC's entries.
type nopSink struct{}

func (nopSink) Entry(int, int, int, string, *estargz.Entry) error { return nil }
func (nopSink) ChunkEnd(int, int64)                               {}

// TestImageZstdChunked: Format zstd:chunked writes tar+zstd layers with
// both layouts' annotations, whose TOC verifies against them and whose
// diffIDs are the config's; converting again keeps them; converting them
// to eStargz converts them (their zstd:chunked annotations dropped); an
// unknown format is refused.
func TestImageZstdChunked(t *testing.T) {
	tmp := t.TempDir()
	src, dst := filepath.Join(tmp, "src"), filepath.Join(tmp, "zc")
	if _, err := testimage.Layout(src, "example.com/zc:1", testtar.Synthetic(2<<20), testtar.Synthetic(1<<10)); err != nil {
		t.Fatal(err)
	}
	rep, err := convert.Image(t.Context(), src, dst, convert.Options{Format: convert.FormatZstdChunked, Prioritized: []string{"etc/hostname"}})
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Layers) != 2 {
		t.Fatalf("%d layers", len(rep.Layers))
	}
	var m ocispec.Manifest
	var idx ocispec.Index
	b, err := os.ReadFile(filepath.Join(dst, "index.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &idx); err != nil {
		t.Fatal(err)
	}
	readJSON(t, dst, idx.Manifests[0], &m)
	var cfg ocispec.Image
	readJSON(t, dst, m.Config, &cfg)
	for i, l := range m.Layers {
		if l.MediaType != ocispec.MediaTypeImageLayerZstd {
			t.Errorf("layer %d: media type %s", i, l.MediaType)
		}
		for _, k := range []string{zstdchunked.ManifestChecksumAnnotation, zstdchunked.LegacyManifestChecksumAnnotation,
			zstdchunked.ManifestPositionAnnotation, zstdchunked.LegacyManifestPositionAnnotation} {
			if l.Annotations[k] == "" {
				t.Errorf("layer %d: no %s", i, k)
			}
		}
		if _, ok := l.Annotations[estargz.TOCJSONDigestAnnotation]; ok {
			t.Errorf("layer %d: eStargz annotation on a zstd:chunked layer", i)
		}
		blob, err := os.ReadFile(filepath.Join(dst, "blobs", "sha256", l.Digest.Encoded()))
		if err != nil {
			t.Fatal(err)
		}
		d, _, _ := zstdchunked.ManifestDigest(l.Annotations)
		if _, _, err := zstdchunked.DecodeTOC(sectionOf(blob), nopSink{}, zstdchunked.Options{Digest: d}); err != nil {
			t.Errorf("layer %d: %v", i, err)
		}
		if got, err := zstdDiffID(blob); err != nil || got != cfg.RootFS.DiffIDs[i] {
			t.Errorf("layer %d: diffID %s (%v), config says %s", i, got, err, cfg.RootFS.DiffIDs[i])
		}
	}
	again, err := convert.Image(t.Context(), dst, filepath.Join(tmp, "again"), convert.Options{Format: convert.FormatZstdChunked})
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range again.Layers {
		if l.Result != nil || l.KeptReason != "already zstd:chunked" {
			t.Errorf("second conversion touched layer %s (%q)", l.From.Digest, l.KeptReason)
		}
	}
	toGzip, err := convert.Image(t.Context(), dst, filepath.Join(tmp, "estargz"), convert.Options{})
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range toGzip.Layers {
		if l.Result == nil || l.To.MediaType != ocispec.MediaTypeImageLayerGzip || l.To.Annotations[zstdchunked.ManifestChecksumAnnotation] != "" {
			t.Errorf("zstd:chunked to eStargz: %+v", l.To)
		}
	}
	if _, err := convert.Image(t.Context(), src, filepath.Join(tmp, "x"), convert.Options{Format: "zstd"}); err == nil {
		t.Error("unknown format accepted")
	}
}

func sectionOf(b []byte) *io.SectionReader {
	return io.NewSectionReader(bytes.NewReader(b), 0, int64(len(b)))
}

// zstdDiffID is the digest of the decompressed blob.
func zstdDiffID(blob []byte) (digest.Digest, error) {
	zr, err := zstd.NewReader(bytes.NewReader(blob))
	if err != nil {
		return "", err
	}
	defer zr.Close()
	return digest.SHA256.FromReader(zr)
}
