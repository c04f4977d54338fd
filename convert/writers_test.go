package convert

import (
	"bytes"
	"compress/gzip"
	"context"
	"io"
	"slices"
	"testing"

	"github.com/klauspost/compress/zstd"
	"github.com/lazysnap/lazysnap/estargz"
	"github.com/lazysnap/lazysnap/internal/testformat"
	"github.com/lazysnap/lazysnap/internal/testtar"
	"github.com/lazysnap/lazysnap/layer"
	"github.com/lazysnap/lazysnap/soci/lazy"
	"github.com/lazysnap/lazysnap/zstdchunked"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// TestWritersRoundTrip: what each writer of the list writes, its
// format's reader (as remote lists them) reads back as the tar it was
// written from, and Written describes what was written: the blob's
// digest and size, and a converted layer's diff ID.
func TestWritersRoundTrip(t *testing.T) {
	tarball := testtar.Synthetic(1 << 20)
	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	zw.Write(tarball)
	zw.Close()
	gzBlob := gz.Bytes()
	gzDesc := ocispec.Descriptor{MediaType: ocispec.MediaTypeImageLayerGzip, Digest: digest.FromBytes(gzBlob), Size: int64(len(gzBlob))}
	cases := []struct {
		name   string
		reader layer.Format
		// layer is what the reader is given: the blob written, or the
		// blob indexed with the index written
		layer func(w *layer.Written, out []byte) testformat.Layer
	}{
		{FormatEStargz, estargz.Format{}, converted},
		{FormatZstdChunked, zstdchunked.Format{}, converted},
		{FormatSOCI, lazy.Format{}, func(w *layer.Written, out []byte) testformat.Layer {
			d := gzDesc
			d.Annotations = map[string]string{lazy.AnnotationZtocDigest: w.Desc.Digest.String()}
			return testformat.Layer{Blob: gzBlob, Desc: d, Artifacts: map[digest.Digest][]byte{w.Desc.Digest: out}}
		}},
	}
	var names []string
	for _, w := range writers() {
		names = append(names, w.Name())
	}
	for _, tc := range cases {
		if !slices.Contains(names, tc.name) {
			t.Errorf("case %s names no writer of the list", tc.name)
		}
	}
	if len(names) != len(cases) {
		t.Errorf("writers %v, cases for %d of them", names, len(cases))
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			w, err := writerNamed(tc.name, layer.InputTar)
			if err != nil {
				w, err = writerNamed(tc.name, layer.InputBlob)
			}
			if err != nil {
				t.Fatal(err)
			}
			if w.Name() != tc.reader.Name() {
				t.Fatalf("writer %q, reader %q: a format's writer and reader have one name", w.Name(), tc.reader.Name())
			}
			in, desc := tarball, ocispec.Descriptor{MediaType: ocispec.MediaTypeImageLayer, Digest: digest.FromBytes(tarball), Size: int64(len(tarball))}
			if w.Input() == layer.InputBlob {
				in, desc = gzBlob, gzDesc
			}
			if why := w.Skip(desc); why != "" {
				t.Fatalf("Skip(%s): %s", desc.MediaType, why)
			}
			var out bytes.Buffer
			res, err := w.Write(context.Background(), &out, io.NewSectionReader(bytes.NewReader(in), 0, int64(len(in))), desc, layer.WriteOptions{ChunkSize: 64 << 10})
			if err != nil {
				t.Fatal(err)
			}
			if res.Desc.Digest != digest.FromBytes(out.Bytes()) || res.Desc.Size != int64(out.Len()) {
				t.Errorf("Written says %s, %d bytes; wrote %s, %d", res.Desc.Digest, res.Desc.Size, digest.FromBytes(out.Bytes()), out.Len())
			}
			if w.Input() == layer.InputTar {
				if got := diffID(t, res.Desc.MediaType, out.Bytes()); res.DiffID != got {
					t.Errorf("DiffID %s, the blob's tar is %s", res.DiffID, got)
				}
				if why := w.Skip(res.Desc); why == "" {
					t.Error("Skip of the layer written: the writer would write it again")
				}
			}
			testformat.ReadBack(t, tc.reader, tc.layer(res, out.Bytes()), tarball)
		})
	}
}

// converted: a converting writer's blob is the layer.
func converted(w *layer.Written, out []byte) testformat.Layer {
	return testformat.Layer{Blob: out, Desc: w.Desc}
}

// diffID is the digest of the tar in blob, of media type mt.
func diffID(t *testing.T, mt string, blob []byte) digest.Digest {
	t.Helper()
	var r io.Reader
	switch mt {
	case ocispec.MediaTypeImageLayerGzip:
		zr, err := gzip.NewReader(bytes.NewReader(blob))
		if err != nil {
			t.Fatal(err)
		}
		r = zr
	case ocispec.MediaTypeImageLayerZstd:
		zr, err := zstd.NewReader(bytes.NewReader(blob))
		if err != nil {
			t.Fatal(err)
		}
		defer zr.Close()
		r = zr
	default:
		t.Fatalf("media type %s", mt)
	}
	d, err := digest.FromReader(r)
	if err != nil {
		t.Fatal(err)
	}
	return d
}
