// Package testformat is the conformance suite every layer format runs
// (layer.Format), in the manner of containerd's snapshot testsuite: a
// format's test gives Run the format and its writer (layer.Writer), and
// Run checks what the mount relies on of every format. RunWriter checks
// what every writer promises (convert's), RunReference what a format
// reads of the blobs the reference eStargz library writes. It is for
// tests only.
package testformat

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"path"
	"strings"
	"syscall"
	"testing"

	"github.com/lazysnap/lazysnap/index"
	"github.com/lazysnap/lazysnap/internal/testtar"
	"github.com/lazysnap/lazysnap/layer"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// Layer is a tar written as a layer of the format under test.
type Layer struct {
	// Blob is the layer blob.
	Blob []byte
	// Desc describes it as an image manifest (or a Source) does: the
	// annotations that name its index's digest.
	Desc ocispec.Descriptor
	// Artifacts are the other blobs of the format the layer's repository
	// holds, by digest (SOCI's zTOC); Open fetches them through a
	// layer.ArtifactBlob.
	Artifacts map[digest.Digest][]byte
}

// Case is one format under test.
type Case struct {
	// Format is the format, as remote lists it.
	Format layer.Format
	// Writer writes the suite's tar as a layer of the format (with 64
	// KiB chunks); IndexAnnotation is an InputBlob writer's, as
	// WriterCase's.
	Writer          layer.Writer
	IndexAnnotation string
}

// tailSize is the tail a layer.TailBlob holds, as remote's Source reads.
const tailSize = 64 << 10

// Run runs the suite against c.
func Run(t *testing.T, c Case) {
	tarball := testtar.Synthetic(1 << 20)
	src, err := testtar.Read(tarball)
	if err != nil {
		t.Fatal(err)
	}
	l := write(t, c.Writer, c.IndexAnnotation, tarball, layer.WriteOptions{ChunkSize: 64 << 10})
	d, ok, err := c.Format.IndexDigest(l.Desc)
	if err != nil || !ok {
		t.Fatalf("%s: IndexDigest(%v): %s, %v, %v: the format does not claim its own layer", c.Format.Name(), l.Desc.Annotations, d, ok, err)
	}

	t.Run("claims no plain layer", func(t *testing.T) {
		plain := ocispec.Descriptor{MediaType: ocispec.MediaTypeImageLayerGzip, Digest: l.Desc.Digest, Size: l.Desc.Size}
		if _, ok, err := c.Format.IndexDigest(plain); ok || err != nil {
			t.Fatalf("IndexDigest of a layer without annotations: %v, %v", ok, err)
		}
	})

	t.Run("reads the tar", func(t *testing.T) { ReadBack(t, c.Format, l, tarball) })

	t.Run("refuses another index digest", func(t *testing.T) {
		other := digest.FromString("not the index")
		if _, _, err := tryOpen(c.Format, newBlob(l, true), other); err == nil {
			t.Fatal("Open verified the index against a digest that is not its")
		}
	})

	t.Run("never serves altered bytes", func(t *testing.T) {
		x, dec := open(t, c.Format, newBlob(l, true), d)
		checked := 0
		for _, name := range testtar.Names(src) {
			s := src[name]
			ino, ok := x.LookupPath(name)
			if s.Header.Typeflag != tar.TypeReg || len(s.Content) == 0 || !ok || x.NumChunks(ino) == 0 {
				continue
			}
			ch := x.Chunk(ino, 0)
			want := s.Content[ch.FileOffset : ch.FileOffset+ch.Size]
			for _, at := range []int64{0, ch.CompressedSize() / 2, ch.CompressedSize() - 1} {
				raw := bytes.Clone(l.Blob[ch.Offset:ch.End])
				raw[at] ^= 0x55
				if got, err := dec.Decode(nil, &ch, raw); err == nil && !bytes.Equal(got, want) {
					t.Fatalf("%q: chunk at %d with byte %d altered decoded to other bytes, without an error", name, ch.Offset, at)
				}
			}
			if checked++; checked == 8 {
				break
			}
		}
		if checked == 0 {
			t.Fatal("no chunk checked")
		}
	})

	t.Run("tail hint", func(t *testing.T) {
		tf, ok := c.Format.(layer.Tailer)
		if !ok {
			t.Skip("not a layer.Tailer: the format's index is not at the blob's end")
		}
		size := int64(len(l.Blob))
		off, ok := tf.IndexStart(l.Blob[max(0, size-tailSize):], size)
		if !ok || off <= 0 || off >= size {
			t.Fatalf("IndexStart of the layer's tail: %d, %v; want an offset inside the blob", off, ok)
		}
		if off, ok := tf.IndexStart(make([]byte, tailSize), size); ok {
			t.Fatalf("IndexStart of zeros: %d, want no footer", off)
		}
		// the index read from the tail alone, from where the hint says
		// it starts: what the warmer reads ahead
		b := newBlob(l, false)
		b.tail = l.Blob[off:]
		x, dec := open(t, c.Format, b, d)
		compare(t, x, dec, l.Blob, src)
	})
}

// ReadBack checks that f reads l, with and without its tail, as the
// tar it was written from: every entry, and every file's content decoded
// chunk by chunk.
func ReadBack(t *testing.T, f layer.Format, l Layer, tarball []byte) {
	t.Helper()
	src, err := testtar.Read(tarball)
	if err != nil {
		t.Fatal(err)
	}
	d, ok, err := f.IndexDigest(l.Desc)
	if err != nil || !ok {
		t.Fatalf("%s: IndexDigest(%v): %s, %v, %v: the format does not claim the layer", f.Name(), l.Desc.Annotations, d, ok, err)
	}
	for _, tail := range []bool{false, true} {
		x, dec := open(t, f, newBlob(l, tail), d)
		compare(t, x, dec, l.Blob, src)
	}
}

// tryOpen opens b with f, building the index as remote does.
func tryOpen(f layer.Format, b layer.Blob, d digest.Digest) (*index.Index, layer.Decoder, error) {
	var x *index.Index
	dec, err := f.Open(context.Background(), b, d, func(decode func(layer.Sink) (layer.Info, error)) (layer.Index, error) {
		var err error
		x, err = index.Decode(decode)
		return x, err
	})
	if err == nil && x == nil {
		err = errors.New("Open built no index")
	}
	return x, dec, err
}

func open(t *testing.T, f layer.Format, b layer.Blob, d digest.Digest) (*index.Index, layer.Decoder) {
	t.Helper()
	x, dec, err := tryOpen(f, b, d)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	return x, dec
}

// compare checks that x presents the tar's entries and that dec decodes
// every chunk of every regular file, each from its own range of blob, to
// the file's content.
func compare(t *testing.T, x *index.Index, dec layer.Decoder, blob []byte, src map[string]*testtar.Entry) {
	t.Helper()
	files := 0
	for _, name := range testtar.Names(src) {
		s := src[name]
		dir, base := path.Split(name)
		if base == ".wh..wh..opq" {
			continue
		}
		if w, ok := strings.CutPrefix(base, ".wh."); ok {
			name = path.Join(dir, w) // a whiteout: a 0/0 character device
		}
		ino, ok := x.LookupPath(name)
		if !ok {
			t.Errorf("%q is not in the index", name)
			continue
		}
		a := x.Attr(ino)
		for n := 0; s.Header.Typeflag == tar.TypeLink && n < len(src); n++ {
			s = src[testtar.Clean(s.Header.Linkname)] // a hardlink (to a hardlink) is its target
		}
		h := &s.Header
		if want := fileType(h.Typeflag, base); a.Mode&syscall.S_IFMT != want {
			t.Errorf("%q: type %o, want %o", name, a.Mode&syscall.S_IFMT, want)
			continue
		}
		if !strings.HasPrefix(base, ".wh.") && int64(a.Mode&0o7777) != h.Mode&0o7777 {
			t.Errorf("%q: mode %o, want %o", name, a.Mode&0o7777, h.Mode&0o7777)
		}
		switch h.Typeflag {
		case tar.TypeSymlink:
			if got, _ := x.Readlink(ino); got != h.Linkname {
				t.Errorf("%q: link to %q, want %q", name, got, h.Linkname)
			}
		case tar.TypeReg:
			files++
			if a.Size != int64(len(s.Content)) {
				t.Errorf("%q: %d bytes, want %d", name, a.Size, len(s.Content))
				continue
			}
			var got []byte
			for i := range x.NumChunks(ino) {
				ch := x.Chunk(ino, i)
				b, err := dec.Decode(nil, &ch, blob[ch.Offset:ch.End])
				if err != nil {
					t.Fatalf("%q: chunk %d: %v", name, i, err)
				}
				got = append(got, b...)
			}
			if !bytes.Equal(got, s.Content) {
				t.Errorf("%q: decoded chunks differ from its content", name)
			}
		}
	}
	if files == 0 {
		t.Error("no file compared")
	}
}

func fileType(flag byte, base string) uint32 {
	if strings.HasPrefix(base, ".wh.") {
		return syscall.S_IFCHR
	}
	return map[byte]uint32{tar.TypeDir: syscall.S_IFDIR, tar.TypeReg: syscall.S_IFREG, tar.TypeSymlink: syscall.S_IFLNK,
		tar.TypeChar: syscall.S_IFCHR, tar.TypeBlock: syscall.S_IFBLK, tar.TypeFifo: syscall.S_IFIFO}[flag]
}

// blob serves a Layer as remote's Source does: ranges, its tail (when
// asked), its artifacts.
type blob struct {
	l    Layer
	tail []byte
}

var (
	_ layer.TailBlob     = (*blob)(nil)
	_ layer.ArtifactBlob = (*blob)(nil)
)

func newBlob(l Layer, tail bool) *blob {
	b := &blob{l: l}
	if tail {
		b.tail = l.Blob[max(0, len(l.Blob)-tailSize):]
	}
	return b
}

func (b *blob) Size() int64  { return int64(len(b.l.Blob)) }
func (b *blob) Tail() []byte { return b.tail }

func (b *blob) ReadAt(p []byte, off int64) (int, error) {
	return bytes.NewReader(b.l.Blob).ReadAt(p, off)
}

func (b *blob) ReadRange(_ context.Context, off, n int64) ([]byte, error) {
	if off < 0 || n < 0 || off+n > b.Size() {
		return nil, errors.New("testformat: range past the blob")
	}
	return bytes.Clone(b.l.Blob[off : off+n]), nil
}

func (b *blob) Artifact(_ context.Context, d digest.Digest) ([]byte, error) {
	a, ok := b.l.Artifacts[d]
	if !ok {
		return nil, errors.New("testformat: no such artifact")
	}
	return bytes.Clone(a), nil
}
