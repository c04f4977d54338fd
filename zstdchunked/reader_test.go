package zstdchunked_test

import (
	"bytes"
	"errors"
	"fmt"
	"testing"

	"github.com/lazysnap/lazysnap/estargz"
	"github.com/lazysnap/lazysnap/internal/testtar"
	"github.com/lazysnap/lazysnap/zstdchunked"
	"github.com/opencontainers/go-digest"
)

// TestContainersLayout: blobs laid out as containers-storage writes them,
// in the current layout (tar-split, 64-byte footer) and the legacy one,
// with files in one chunk (no chunkDigest), many chunks, and zero chunks.
func TestContainersLayout(t *testing.T) {
	tarball := testtar.Synthetic(1 << 20)
	src, err := testtar.Read(tarball)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name   string
		chunk  int
		legacy bool
	}{
		{"current", 64 << 10, false},
		{"legacy", 64 << 10, true},
		{"one chunk a file", 8 << 20, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			blob, ann := containersBlob(t, tarball, tc.chunk, tc.legacy)
			d, ok, err := zstdchunked.ManifestDigest(ann)
			if err != nil || !ok {
				t.Fatalf("annotations %v: %v", ann, err)
			}
			c, f, err := decode(blob, d)
			if err != nil {
				t.Fatal(err)
			}
			if f.Legacy != tc.legacy || !tc.legacy && f.TarSplitSize == 0 {
				t.Errorf("footer %+v", f)
			}
			checkContents(t, blob, c, src)
		})
	}
}

// TestVerification: a TOC is accepted only against its digest, and a chunk
// only if its bytes match.
func TestVerification(t *testing.T) {
	tarball := testtar.Synthetic(1 << 20)
	blob, res := convert(t, tarball)
	if _, _, err := decode(blob, digest.SHA256.FromString("other")); !errors.Is(err, zstdchunked.ErrVerify) {
		t.Errorf("wrong digest: %v, want ErrVerify", err)
	}
	p, _ := zstdchunked.ParsePosition(res.Annotations[zstdchunked.ManifestPositionAnnotation])
	bad := bytes.Clone(blob)
	bad[p.Offset+p.Size/2] ^= 1
	if _, _, err := decode(bad, res.TOCDigest); !errors.Is(err, zstdchunked.ErrVerify) {
		t.Errorf("corrupt TOC: %v, want ErrVerify", err)
	}
	c, _, err := decode(blob, res.TOCDigest)
	if err != nil {
		t.Fatal(err)
	}
	var dec zstdchunked.Decoder
	for _, e := range c.entries {
		if len(e.Chunks) == 0 {
			continue
		}
		ch := e.Chunks[0]
		raw := bytes.Clone(blob[ch.Offset:ch.End])
		ch.Digest = digest.SHA256.FromString("x")
		if _, err := dec.Decode(nil, &ch, raw); !errors.Is(err, zstdchunked.ErrVerify) {
			t.Errorf("%q: wrong chunk digest: %v", e.Name, err)
		}
		ch = e.Chunks[0]
		raw[len(raw)/2] ^= 0x40
		if got, err := dec.Decode(nil, &ch, raw); err == nil && !bytes.Equal(got, blobChunk(t, blob, &ch)) {
			t.Errorf("%q: corrupt chunk decoded to wrong bytes", e.Name)
		}
	}
}

// blobChunk decodes ch from the unmodified blob.
func blobChunk(t *testing.T, blob []byte, ch *estargz.Chunk) []byte {
	var dec zstdchunked.Decoder
	b, err := dec.Decode(nil, ch, blob[ch.Offset:ch.End])
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestTOCLargerThanBlob: a layer of many small files, whose uncompressed
// TOC is larger than the whole blob (the footer's RawSize past the blob's
// size), decodes.
func TestTOCLargerThanBlob(t *testing.T) {
	var files [][2]string
	for i := range 10000 {
		files = append(files, [2]string{fmt.Sprintf("d%02d/f%05d", i%50, i), fmt.Sprintf("file %d\n", i)})
	}
	tarball := testtar.Files(files)
	blob, res := convert(t, tarball)
	c, f, err := decode(blob, res.TOCDigest)
	if err != nil {
		t.Fatal(err)
	}
	if f.RawSize <= int64(len(blob)) {
		t.Fatalf("the TOC is %d bytes uncompressed, the blob %d: want a TOC larger than the blob", f.RawSize, len(blob))
	}
	src, err := testtar.Read(tarball)
	if err != nil {
		t.Fatal(err)
	}
	checkContents(t, blob, c, src)
}
