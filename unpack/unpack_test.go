package unpack_test

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/klauspost/compress/zstd"
	"github.com/lazysnap/lazysnap/internal/testtar"
	"github.com/lazysnap/lazysnap/unpack"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"golang.org/x/sys/unix"
)

func gzipped(t testing.TB, b []byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	zw.Write(b)
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func zstded(t testing.TB, b []byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw, _ := zstd.NewWriter(&buf)
	zw.Write(b)
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// serve is a fetch that writes blob in pieces of 32 KiB; failAt >= 0
// fails the fetch once that many bytes are written.
func serve(blob []byte, failAt int) func(context.Context, io.Writer) error {
	return func(ctx context.Context, w io.Writer) error {
		for off := 0; off < len(blob); off += 32 << 10 {
			end := min(off+32<<10, len(blob))
			if failAt >= 0 && end > failAt {
				return errors.New("connection reset by peer")
			}
			if _, err := w.Write(blob[off:end]); err != nil {
				return err
			}
		}
		return nil
	}
}

// TestUnpack: a layer is applied with overlayfs's whiteouts, its diff ID
// and (gzip) zTOC come out of the same pass; a corrupt blob, a blob of
// another digest, a failed fetch and a full disk each fail with their
// reason.
func TestUnpack(t *testing.T) {
	tarb := testtar.Synthetic(1 << 20)
	diffID := digest.FromBytes(tarb)
	gz := gzipped(t, tarb)
	corrupt := bytes.Clone(gz)
	corrupt[len(corrupt)/2] ^= 0xff
	otherDigest := bytes.Clone(gz)
	otherDigest[4] ^= 0x01 // the gzip header's mtime: inflates the same
	desc := func(mt string, b []byte) ocispec.Descriptor {
		return ocispec.Descriptor{MediaType: mt, Digest: digest.FromBytes(b), Size: int64(len(b))}
	}
	gzDesc := desc(ocispec.MediaTypeImageLayerGzip, gz)
	for _, tc := range []struct {
		name      string
		desc      ocispec.Descriptor
		blob      []byte
		failAt    int
		index     bool
		wantErr   error
		wantIndex bool
	}{
		{"gzip, indexed", gzDesc, gz, -1, true, nil, true},
		{"gzip", gzDesc, gz, -1, false, nil, false},
		{"zstd", desc(ocispec.MediaTypeImageLayerZstd, zstded(t, tarb)), zstded(t, tarb), -1, true, nil, false},
		{"tar", desc(ocispec.MediaTypeImageLayer, tarb), tarb, -1, true, nil, false},
		{"corrupt", gzDesc, corrupt, -1, true, unpack.ErrCorrupt, false},
		{"corrupt, not indexed", gzDesc, corrupt, -1, false, unpack.ErrCorrupt, false},
		{"another blob under the digest", gzDesc, otherDigest, -1, true, unpack.ErrDigest, false},
		{"fetch fails half-way", gzDesc, gz, len(gz) / 2, true, unpack.ErrFetch, false},
		{"unsupported media type", desc("application/x-foreign", gz), gz, -1, true, unpack.ErrUnsupported, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			var copied bytes.Buffer
			res, err := unpack.Unpack(context.Background(), dir, tc.desc, serve(tc.blob, tc.failAt), unpack.Options{Index: tc.index, SpanSize: 64 << 10, Blob: &copied})
			if tc.wantErr != nil {
				if !errors.Is(err, tc.wantErr) {
					t.Fatalf("Unpack: %v, want %v", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if res.DiffID != diffID || res.Uncompressed < int64(len(tarb))-1024 {
				t.Fatalf("diff ID %s (%d bytes), want %s", res.DiffID, res.Uncompressed, diffID)
			}
			if !bytes.Equal(copied.Bytes(), tc.blob) || res.BlobErr != nil {
				t.Errorf("Options.Blob got %d bytes (%v), want the blob's %d", copied.Len(), res.BlobErr, len(tc.blob))
			}
			if (res.Ztoc != nil) != tc.wantIndex {
				t.Fatalf("zTOC %v (%v), want one: %v", res.Ztoc != nil, res.IndexErr, tc.wantIndex)
			}
			if res.Ztoc != nil && res.Ztoc.CompressedSize != int64(len(gz)) {
				t.Errorf("zTOC of %d bytes, the blob has %d", res.Ztoc.CompressedSize, len(gz))
			}
			checkTree(t, dir, tarb)
		})
	}
}

// checkTree checks dir against the tar: regular files' contents, and
// overlayfs's whiteouts.
func checkTree(t *testing.T, dir string, tarb []byte) {
	t.Helper()
	ents, err := testtar.Read(tarb)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for name, e := range ents {
		if e.Header.Typeflag != '0' || filepath.Base(name)[:min(4, len(filepath.Base(name)))] == ".wh." {
			continue
		}
		got, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil || !bytes.Equal(got, e.Content) {
			t.Fatalf("%s: %d bytes (%v), want %d", name, len(got), err, len(e.Content))
		}
		n++
	}
	var st unix.Stat_t
	if err := unix.Lstat(filepath.Join(dir, "x/deleted"), &st); err != nil || st.Mode&unix.S_IFMT != unix.S_IFCHR || st.Rdev != 0 {
		t.Errorf("whiteout x/deleted: %v, mode %o rdev %d; want a 0/0 character device", err, st.Mode, st.Rdev)
	}
	buf := make([]byte, 8)
	if m, err := unix.Lgetxattr(filepath.Join(dir, "opaque"), "trusted.overlay.opaque", buf); err != nil || string(buf[:m]) != "y" {
		t.Errorf("opaque dir: trusted.overlay.opaque %q (%v), want y", buf[:max(m, 0)], err)
	}
	if _, err := os.Lstat(filepath.Join(dir, "opaque/.wh..wh..opq")); err == nil {
		t.Error("the opaque marker was written as a file")
	}
	if n < 200 {
		t.Errorf("only %d regular files checked", n)
	}
}

// TestUnpackEmptyLayer: a layer of no entries (a tar's end alone, as
// image builders write for steps that change no file) unpacks, indexed.
func TestUnpackEmptyLayer(t *testing.T) {
	var b bytes.Buffer
	tar.NewWriter(&b).Close()
	gz := gzipped(t, b.Bytes())
	d := ocispec.Descriptor{MediaType: ocispec.MediaTypeImageLayerGzip, Digest: digest.FromBytes(gz), Size: int64(len(gz))}
	res, err := unpack.Unpack(context.Background(), t.TempDir(), d, serve(gz, -1), unpack.Options{Index: true})
	if err != nil || res.DiffID != digest.FromBytes(b.Bytes()) || res.Ztoc == nil {
		t.Fatalf("Unpack: %v, diff ID %s, zTOC %v (%v)", err, res.DiffID, res.Ztoc != nil, res.IndexErr)
	}
}

// TestUnpackBlobFails: a failing Options.Blob does not fail the unpack;
// Result.BlobErr says why.
func TestUnpackBlobFails(t *testing.T) {
	gz := gzipped(t, testtar.Synthetic(1<<20))
	d := ocispec.Descriptor{MediaType: ocispec.MediaTypeImageLayerGzip, Digest: digest.FromBytes(gz), Size: int64(len(gz))}
	werr := errors.New("content store gone")
	res, err := unpack.Unpack(context.Background(), t.TempDir(), d, serve(gz, -1), unpack.Options{Blob: failWriter{werr}})
	if err != nil || !errors.Is(res.BlobErr, werr) {
		t.Fatalf("Unpack: %v, BlobErr %v; want success and the writer's error", err, res.BlobErr)
	}
}

type failWriter struct{ err error }

func (f failWriter) Write([]byte) (int, error) { return 0, f.err }

// TestUnpackFullDisk: a disk that fills up fails the unpack with ENOSPC.
func TestUnpackFullDisk(t *testing.T) {
	if os.Getuid() != 0 {
		t.Skip("mounting a tmpfs needs root")
	}
	dir := t.TempDir()
	if err := unix.Mount("tmpfs", dir, "tmpfs", 0, "size=256k"); err != nil {
		t.Skipf("tmpfs: %v", err)
	}
	t.Cleanup(func() { unix.Unmount(dir, unix.MNT_DETACH) })
	gz := gzipped(t, testtar.Synthetic(1<<20))
	d := ocispec.Descriptor{MediaType: ocispec.MediaTypeImageLayerGzip, Digest: digest.FromBytes(gz), Size: int64(len(gz))}
	_, err := unpack.Unpack(context.Background(), dir, d, serve(gz, -1), unpack.Options{Index: true})
	if !errors.Is(err, unpack.ErrApply) || !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("Unpack on a full disk: %v, want ErrApply wrapping ENOSPC", err)
	}
}
