package testformat

// The reference implementation, github.com/containerd/stargz-snapshotter/estargz,
// as an oracle of what the eStargz and zstd:chunked writers write.

import (
	"archive/tar"
	"bytes"
	"io"
	"testing"

	refestargz "github.com/containerd/stargz-snapshotter/estargz"
	"github.com/lazysnap/lazysnap/internal/testtar"
	"github.com/lazysnap/lazysnap/layer"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// ReferenceReads checks what the reference eStargz library's reader (of
// an eStargz or zstd:chunked blob a writer wrote) presents against the
// source tar, verifying every chunk with the reference verifier: what
// lazysnap writes opens and verifies there.
func ReferenceReads(t *testing.T, r *refestargz.Reader, v refestargz.TOCEntryVerifier, src map[string]*testtar.Entry) {
	t.Helper()
	types := map[byte]string{ // the TOC's entry types by tar type flag
		tar.TypeReg: layer.TypeReg, tar.TypeDir: layer.TypeDir, tar.TypeSymlink: layer.TypeSymlink, tar.TypeLink: layer.TypeHardlink,
		tar.TypeChar: layer.TypeChar, tar.TypeBlock: layer.TypeBlock, tar.TypeFifo: layer.TypeFifo,
	}
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
		content, chunked := s.Content, name // the reference finds chunks by the target's name
		if h.Typeflag == tar.TypeLink {
			target := testtar.Clean(h.Linkname)
			for src[target].Header.Typeflag == tar.TypeLink {
				target = testtar.Clean(src[target].Header.Linkname)
			}
			content, h, chunked = src[target].Content, &src[target].Header, target
		}
		if want := types[h.Typeflag]; e.Type != want {
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
			ce, ok := r.ChunkEntryForOffset(chunked, off)
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

// ReferenceCase is a format whose blobs the reference library writes.
type ReferenceCase struct {
	// Format is the format's reader, as remote lists it.
	Format layer.Format
	// Build writes tarball as the reference library does with opts,
	// and returns the blob and its descriptor (the annotations that
	// name its index's digest).
	Build func(t *testing.T, tarball []byte, opts []refestargz.Option) ([]byte, ocispec.Descriptor)
	// Check, if set, checks what the format's package promises of such
	// a blob beyond its Format.
	Check func(t *testing.T, blob []byte, desc ocispec.Descriptor, src map[string]*testtar.Entry)
}

// RunReference runs the reference suite against c: blobs the reference
// library writes (default options, small chunks, a minimum chunk size
// that puts small files in one compressed member, prioritized files,
// parallel compression) read back through the format as the tar.
func RunReference(t *testing.T, c ReferenceCase) {
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
		{"parallel", []refestargz.Option{refestargz.WithParallelism(4)}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			blob, desc := c.Build(t, tarball, tc.opts)
			ReadBack(t, c.Format, Layer{Blob: blob, Desc: desc}, tarball)
			if c.Check != nil {
				c.Check(t, blob, desc, src)
			}
		})
	}
}
