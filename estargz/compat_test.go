package estargz_test

// Byte compatibility with the reference implementation,
// github.com/containerd/stargz-snapshotter/estargz, used here as an oracle
// only: blobs we write must open and verify there, blobs it writes must open
// and verify here.

import (
	"archive/tar"
	"bytes"
	"io"
	"testing"

	refestargz "github.com/containerd/stargz-snapshotter/estargz"
	"github.com/lazysnap/lazysnap/estargz"
	"github.com/lazysnap/lazysnap/internal/testtar"
)

func TestReferenceOpensOurBlobs(t *testing.T) {
	tarball := testtar.Synthetic(9 << 20)
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
		{"prioritized", []estargz.ConvertOption{estargz.WithPrioritizedFiles([]string{"etc/hostname", "big"})}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			blob, res := convert(t, tarball, tc.opts...)
			r, err := refestargz.Open(sectionOf(blob))
			if err != nil {
				t.Fatalf("reference Open: %v", err)
			}
			if r.TOCDigest() != res.TOCDigest {
				t.Errorf("reference TOC digest %s, ours %s", r.TOCDigest(), res.TOCDigest)
			}
			v, err := r.VerifyTOC(res.TOCDigest)
			if err != nil {
				t.Fatalf("reference VerifyTOC: %v", err)
			}
			compareReference(t, r, v, src)
		})
	}
}

// compareReference checks what the reference reader presents against the
// source tar, verifying every chunk with the reference verifier.
func compareReference(t *testing.T, r *refestargz.Reader, v refestargz.TOCEntryVerifier, src map[string]*testtar.Entry) {
	t.Helper()
	for _, name := range testtar.Names(src) {
		if name == "" {
			continue
		}
		s := src[name]
		e, ok := r.Lookup(name)
		if !ok {
			t.Errorf("reference: %q missing", name)
			continue
		}
		h := &s.Header
		content := s.Content
		if h.Typeflag == tar.TypeLink {
			target := testtar.Clean(h.Linkname)
			for src[target].Header.Typeflag == tar.TypeLink {
				target = testtar.Clean(src[target].Header.Linkname)
			}
			content, h = src[target].Content, &src[target].Header
		}
		if want := typeOf[h.Typeflag]; e.Type != want {
			t.Errorf("reference: %q type %s, want %s", name, e.Type, want)
			continue
		}
		if e.Mode&0o7777 != h.Mode&0o7777 || e.UID != h.Uid || e.GID != h.Gid || !e.ModTime().Equal(h.ModTime) {
			t.Errorf("reference: %q metadata %o %d:%d %v", name, e.Mode, e.UID, e.GID, e.ModTime())
		}
		if h.Typeflag == tar.TypeSymlink && e.LinkName != h.Linkname {
			t.Errorf("reference: %q link %q, want %q", name, e.LinkName, h.Linkname)
		}
		for k, val := range testtar.Xattrs(h) {
			if string(e.Xattrs[k]) != val {
				t.Errorf("reference: %q xattr %s", name, k)
			}
		}
		if h.Typeflag != tar.TypeReg {
			continue
		}
		sr, err := r.OpenFile(name)
		if err != nil {
			t.Errorf("reference: OpenFile %q: %v", name, err)
			continue
		}
		got, err := io.ReadAll(sr)
		if err != nil || !bytes.Equal(got, content) {
			t.Errorf("reference: %q content differs (%v)", name, err)
			continue
		}
		for off := int64(0); off < int64(len(content)); {
			ce, ok := r.ChunkEntryForOffset(name, off)
			if !ok {
				t.Errorf("reference: %q no chunk at %d", name, off)
				break
			}
			cv, err := v.Verifier(ce)
			if err != nil {
				t.Errorf("reference: %q verifier: %v", name, err)
				break
			}
			cv.Write(content[ce.ChunkOffset : ce.ChunkOffset+ce.ChunkSize])
			if !cv.Verified() {
				t.Errorf("reference: %q chunk at %d does not verify", name, off)
			}
			off = ce.ChunkOffset + ce.ChunkSize
		}
	}
}

func TestWeOpenReferenceBlobs(t *testing.T) {
	tarball := testtar.Synthetic(9 << 20)
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
		{"parallel", []refestargz.Option{refestargz.WithParallelism(4)}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b, err := refestargz.Build(sectionOf(tarball), tc.opts...)
			if err != nil {
				t.Fatal(err)
			}
			blob, err := io.ReadAll(b)
			if err != nil {
				t.Fatal(err)
			}
			r, err := estargz.Open(sectionOf(blob), estargz.WithTOCDigest(b.TOCDigest()))
			if err != nil {
				t.Fatalf("Open: %v", err)
			}
			compareWithSource(t, r, src)
			off, size, err := estargz.ParseFooter(blob[len(blob)-estargz.FooterSize:])
			if err != nil || size != estargz.FooterSize {
				t.Fatalf("ParseFooter: %v", err)
			}
			if got := estargz.Footer(off); !bytes.Equal(got, blob[len(blob)-estargz.FooterSize:]) {
				t.Errorf("our footer %x differs from the reference's %x", got, blob[len(blob)-estargz.FooterSize:])
			}
			if off != r.TOC().Offset {
				t.Errorf("TOC offset %d, footer says %d", r.TOC().Offset, off)
			}
		})
	}
}
