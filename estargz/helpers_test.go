package estargz_test

import (
	"archive/tar"
	"bytes"
	"context"
	"io"
	"testing"
	"time"

	"github.com/klauspost/compress/gzip"
	"github.com/lazysnap/lazysnap/estargz"
	"github.com/lazysnap/lazysnap/internal/testtar"
	"github.com/lazysnap/lazysnap/layer"
	"github.com/opencontainers/go-digest"
)

// convert runs our converter over a tar held in memory.
func convert(t testing.TB, tarball []byte, opts ...estargz.ConvertOption) ([]byte, *estargz.Result) {
	t.Helper()
	var out bytes.Buffer
	res, err := estargz.Convert(context.Background(), &out, io.NewSectionReader(bytes.NewReader(tarball), 0, int64(len(tarball))), opts...)
	if err != nil {
		t.Fatalf("Convert: %v", err)
	}
	return out.Bytes(), res
}

func sectionOf(b []byte) *io.SectionReader {
	return io.NewSectionReader(bytes.NewReader(b), 0, int64(len(b)))
}

// gunzipAll decompresses every member of a blob.
func gunzipAll(t testing.TB, blob []byte) []byte {
	t.Helper()
	zr, err := gzip.NewReader(bytes.NewReader(blob))
	if err != nil {
		t.Fatal(err)
	}
	b, err := io.ReadAll(zr)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

var typeOf = map[byte]string{
	tar.TypeReg: layer.TypeReg, tar.TypeDir: layer.TypeDir, tar.TypeSymlink: layer.TypeSymlink,
	tar.TypeLink: layer.TypeHardlink, tar.TypeChar: layer.TypeChar, tar.TypeBlock: layer.TypeBlock,
	tar.TypeFifo: layer.TypeFifo,
}

// compareWithSource checks every source entry's metadata and content
// against what r presents.
func compareWithSource(t *testing.T, r *estargz.Reader, src map[string]*testtar.Entry) {
	t.Helper()
	for _, name := range testtar.Names(src) {
		s := src[name]
		e, err := r.Lookup(name)
		if err != nil {
			t.Errorf("%q: %v", name, err)
			continue
		}
		h := &s.Header
		if want := typeOf[h.Typeflag]; e.Type != want {
			t.Errorf("%q: type %s, want %s", name, e.Type, want)
			continue
		}
		if e.Mode != h.Mode&0o7777 || e.UID != h.Uid || e.GID != h.Gid || e.Uname != h.Uname || e.Gname != h.Gname {
			t.Errorf("%q: mode/owner %o %d:%d %s:%s, want %o %d:%d %s:%s", name, e.Mode, e.UID, e.GID, e.Uname, e.Gname,
				h.Mode&0o7777, h.Uid, h.Gid, h.Uname, h.Gname)
		}
		if !e.ModTime.Equal(h.ModTime.Truncate(time.Second)) {
			t.Errorf("%q: modtime %v, want %v", name, e.ModTime, h.ModTime)
		}
		if int64(e.DevMajor) != h.Devmajor || int64(e.DevMinor) != h.Devminor {
			t.Errorf("%q: device %d:%d, want %d:%d", name, e.DevMajor, e.DevMinor, h.Devmajor, h.Devminor)
		}
		if h.Typeflag == tar.TypeSymlink && e.LinkName != h.Linkname {
			t.Errorf("%q: symlink to %q, want %q", name, e.LinkName, h.Linkname)
		}
		wantX := testtar.Xattrs(h)
		if len(wantX) != len(e.Xattrs) {
			t.Errorf("%q: xattrs %v, want %v", name, e.Xattrs, wantX)
		}
		for k, v := range wantX {
			if string(e.Xattrs[k]) != v {
				t.Errorf("%q: xattr %s=%q, want %q", name, k, e.Xattrs[k], v)
			}
		}
		content := s.Content
		if h.Typeflag == tar.TypeLink {
			target := testtar.Clean(h.Linkname)
			for src[target].Header.Typeflag == tar.TypeLink {
				target = testtar.Clean(src[target].Header.Linkname)
			}
			content = src[target].Content
		} else if h.Typeflag != tar.TypeReg {
			continue
		}
		f, err := r.OpenFile(name)
		if err != nil {
			t.Errorf("%q: OpenFile: %v", name, err)
			continue
		}
		got := make([]byte, f.Size())
		if _, err := f.ReadAt(got, 0); err != nil && len(got) > 0 {
			t.Errorf("%q: ReadAt: %v", name, err)
		}
		if !bytes.Equal(got, content) {
			t.Errorf("%q: content differs (%d bytes, want %d)", name, len(got), len(content))
		}
		if e.Type == layer.TypeReg && e.Digest != "" && e.Digest != digest.FromBytes(content).String() {
			t.Errorf("%q: file digest %s does not match content", name, e.Digest)
		}
	}
}
