package testformat

import (
	"bytes"
	"compress/gzip"
	"context"
	"io"
	"slices"
	"testing"

	"github.com/lazysnap/lazysnap/internal/testtar"
	"github.com/lazysnap/lazysnap/layer"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// WriterCase is one format's writer under test (layer.Writer), read back
// through its reader.
type WriterCase struct {
	// Writer is the writer, as convert lists it.
	Writer layer.Writer
	// Format is its format's reader, as remote lists it.
	Format layer.Format
	// Decompress returns the tar in a blob an InputTar writer wrote,
	// whose digest the diff ID must be.
	Decompress func(blob []byte) ([]byte, error)
	// IndexAnnotation is, for an InputBlob writer, the layer annotation
	// in which the reader finds the digest of the index written (as the
	// mount gives it).
	IndexAnnotation string
	// Check, if set, checks what the format promises beyond the suite,
	// for each write.
	Check func(t *testing.T, w Wrote)
}

// Wrote is one write of RunWriter, for a WriterCase's Check.
type Wrote struct {
	Name    string // of the write's options
	Opts    layer.WriteOptions
	Src     map[string]*testtar.Entry // the tar written
	Out     []byte                    // what Write wrote
	Written *layer.Written
}

// RunWriter runs the writer suite against c: a tar written with default
// options, small chunks, a low level and prioritized files; Written
// describes the bytes written, the diff ID and size of an InputTar
// writer's layer are its tar's and the writer skips the layer it wrote;
// a prioritized file's chunks come before every other file's and the
// missing ones are listed; the reader reads the layer back as the tar.
func RunWriter(t *testing.T, c WriterCase) {
	tarball := testtar.Synthetic(5 << 20)
	src, err := testtar.Read(tarball)
	if err != nil {
		t.Fatal(err)
	}
	if c.Writer.Name() != c.Format.Name() {
		t.Fatalf("writer %q, reader %q: a format's writer and reader have one name", c.Writer.Name(), c.Format.Name())
	}
	in, desc := input(c.Writer, tarball)
	if why := c.Writer.Skip(desc); why != "" {
		t.Fatalf("Skip(%s): %s", desc.MediaType, why)
	}
	for _, tc := range []struct {
		name string
		opts layer.WriteOptions
	}{
		{"defaults", layer.WriteOptions{}},
		{"small chunks", layer.WriteOptions{ChunkSize: 64 << 10}},
		{"level 1", layer.WriteOptions{Level: 1}},
		// a hardlink to a hardlink, a name with "./", a missing file, a
		// file of several chunks
		{"prioritized", layer.WriteOptions{Prioritized: []string{"usr/bin/tool-link2", "./etc/hostname", "missing/file", "big"}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var out bytes.Buffer
			w, err := c.Writer.Write(context.Background(), &out, io.NewSectionReader(bytes.NewReader(in), 0, int64(len(in))), desc, tc.opts)
			if err != nil {
				t.Fatal(err)
			}
			if w.Desc.Digest != digest.FromBytes(out.Bytes()) || w.Desc.Size != int64(out.Len()) {
				t.Errorf("Written says %s, %d bytes; wrote %s, %d", w.Desc.Digest, w.Desc.Size, digest.FromBytes(out.Bytes()), out.Len())
			}
			if c.Writer.Input() == layer.InputTar {
				checkConverted(t, c, w, out.Bytes(), tc.opts)
			}
			ReadBack(t, c.Format, layerOf(c.Writer, c.IndexAnnotation, in, desc, out.Bytes(), w), tarball)
			if c.Check != nil {
				c.Check(t, Wrote{Name: tc.name, Opts: tc.opts, Src: src, Out: out.Bytes(), Written: w})
			}
		})
	}
}

// input is what w reads of tarball, and its descriptor: the tar, or
// the tar gzipped (an InputBlob writer's).
func input(w layer.Writer, tarball []byte) ([]byte, ocispec.Descriptor) {
	if w.Input() == layer.InputTar {
		return tarball, ocispec.Descriptor{MediaType: ocispec.MediaTypeImageLayer, Digest: digest.FromBytes(tarball), Size: int64(len(tarball))}
	}
	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	zw.Write(tarball)
	zw.Close()
	return gz.Bytes(), ocispec.Descriptor{MediaType: ocispec.MediaTypeImageLayerGzip, Digest: digest.FromBytes(gz.Bytes()), Size: int64(gz.Len())}
}

// layerOf is the layer a reader is given of what w wrote (out, which
// res describes) of in (described by desc): out itself, or, for an
// InputBlob writer, in with out as its index, named by indexAnnotation.
func layerOf(w layer.Writer, indexAnnotation string, in []byte, desc ocispec.Descriptor, out []byte, res *layer.Written) Layer {
	if w.Input() == layer.InputTar {
		return Layer{Blob: out, Desc: res.Desc}
	}
	desc.Annotations = map[string]string{indexAnnotation: res.Desc.Digest.String()}
	return Layer{Blob: in, Desc: desc, Artifacts: map[digest.Digest][]byte{res.Desc.Digest: out}}
}

// write writes tarball with w and opts, as a Layer of its format.
func write(t testing.TB, w layer.Writer, indexAnnotation string, tarball []byte, opts layer.WriteOptions) Layer {
	t.Helper()
	in, desc := input(w, tarball)
	var out bytes.Buffer
	res, err := w.Write(context.Background(), &out, io.NewSectionReader(bytes.NewReader(in), 0, int64(len(in))), desc, opts)
	if err != nil {
		t.Fatal(err)
	}
	return layerOf(w, indexAnnotation, in, desc, out.Bytes(), res)
}

// checkConverted checks what an InputTar writer wrote: its tar (diff
// ID, size), that the writer keeps it, and where prioritized files went.
func checkConverted(t *testing.T, c WriterCase, w *layer.Written, out []byte, opts layer.WriteOptions) {
	t.Helper()
	raw, err := c.Decompress(out)
	if err != nil {
		t.Fatal(err)
	}
	if w.DiffID != digest.FromBytes(raw) || w.UncompressedSize != int64(len(raw)) {
		t.Errorf("diff ID %s, %d bytes; the blob's tar is %s, %d bytes", w.DiffID, w.UncompressedSize, digest.FromBytes(raw), len(raw))
	}
	if why := c.Writer.Skip(w.Desc); why == "" {
		t.Error("Skip of the layer written: the writer would write it again")
	}
	if opts.Prioritized == nil {
		return
	}
	if !slices.Equal(w.MissingPrioritized, []string{"missing/file"}) {
		t.Errorf("missing prioritized files %q, want [missing/file]", w.MissingPrioritized)
	}
	d, _, _ := c.Format.IndexDigest(w.Desc)
	x, _ := open(t, c.Format, newBlob(Layer{Blob: out, Desc: w.Desc}, true), d)
	chunks := func(name string) (first, last int64) { // their offsets
		ino, ok := x.LookupPath(name)
		if !ok || x.NumChunks(ino) == 0 {
			t.Fatalf("%q has no chunks", name)
		}
		n := x.NumChunks(ino)
		return x.Chunk(ino, 0).Offset, x.Chunk(ino, n-1).Offset
	}
	var last int64 // the prioritized files' last chunk
	for _, p := range []string{"usr/bin/tool", "etc/hostname", "big"} {
		_, hi := chunks(p)
		last = max(last, hi)
	}
	for _, other := range []string{"etc/setuid", "mostly-zero", "opaque/kept", "x/with-xattrs"} {
		if lo, _ := chunks(other); lo <= last {
			t.Errorf("%q starts at %d, before the prioritized files end (%d)", other, lo, last)
		}
	}
}
