package benchmarks

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/rand"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/lazysnap/lazysnap/estargz"
	lfs "github.com/lazysnap/lazysnap/fs"
	"github.com/lazysnap/lazysnap/fs/fetch"
	"github.com/lazysnap/lazysnap/index"
	"github.com/lazysnap/lazysnap/internal/testenv"
)

// fileBlob serves ranges of a blob file.
type fileBlob struct{ f *os.File }

func (b fileBlob) ReadRange(ctx context.Context, off, n int64) ([]byte, error) {
	p := make([]byte, n)
	_, err := b.f.ReadAt(p, off)
	return p, err
}

func needFUSE(b *testing.B) {
	testenv.NeedFUSE(b)
}

// mountTar converts a tar file to eStargz in dir, mounts it, runs the
// background fetch to completion, and returns the mountpoint.
func mountTar(b *testing.B, tarPath, dir string) string {
	src, err := os.Open(tarPath)
	if err != nil {
		b.Fatal(err)
	}
	defer src.Close()
	st, _ := src.Stat()
	blobF, err := os.Create(filepath.Join(dir, "blob"))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { blobF.Close() })
	res, err := estargz.Convert(context.Background(), blobF, io.NewSectionReader(src, 0, st.Size()))
	if err != nil {
		b.Fatal(err)
	}
	r, err := estargz.Open(io.NewSectionReader(blobF, 0, res.Size), estargz.WithTOCDigest(res.TOCDigest))
	if err != nil {
		b.Fatal(err)
	}
	x, err := index.Build(r.TOC().Entries, r.TOC().LayerInfo())
	if err != nil {
		b.Fatal(err)
	}
	l, err := fetch.NewLayer(x, fileBlob{blobF}, fetch.Options{ContentDir: filepath.Join(dir, "content"), BackgroundConcurrency: 2, Decoder: estargz.Decoder{}})
	if err != nil {
		b.Fatal(err)
	}
	mnt := filepath.Join(dir, "mnt")
	os.Mkdir(mnt, 0o755)
	m, err := lfs.MountLayer(l, mnt)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { m.Unmount(); l.Close() })
	l.Start()
	for !l.Stats().BackgroundDone {
		time.Sleep(10 * time.Millisecond)
	}
	if !m.Passthrough() {
		b.Log("kernel without FUSE passthrough")
	}
	return mnt
}

func readAll(b *testing.B, path string, buf []byte) int64 {
	f, err := os.Open(path)
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	var n int64
	for {
		m, err := f.Read(buf)
		n += int64(m)
		if err == io.EOF {
			return n
		}
		if err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkCachedRead512M reads a 512 MiB incompressible file sequentially
// from a mounted layer whose content is fully fetched, and the same file
// from the host filesystem, both from the page cache.
func BenchmarkCachedRead512M(b *testing.B) {
	needFUSE(b)
	dir := b.TempDir()
	data := make([]byte, 512<<20)
	rand.Read(data)
	host := filepath.Join(dir, "host-file")
	if err := os.WriteFile(host, data, 0o644); err != nil {
		b.Fatal(err)
	}
	var tb bytes.Buffer
	tw := tar.NewWriter(&tb)
	tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: "big", Size: int64(len(data)), Mode: 0o644})
	tw.Write(data)
	tw.Close()
	tarPath := filepath.Join(dir, "layer.tar")
	os.WriteFile(tarPath, tb.Bytes(), 0o644)
	data, tb = nil, bytes.Buffer{}
	mnt := mountTar(b, tarPath, dir)
	buf := make([]byte, 1<<20)
	for _, tc := range []struct{ name, path string }{{"host", host}, {"lazysnap", filepath.Join(mnt, "big")}} {
		b.Run(tc.name, func(b *testing.B) {
			readAll(b, tc.path, buf) // warm the page cache
			b.SetBytes(512 << 20)
			b.ReportAllocs()
			for b.Loop() {
				if n := readAll(b, tc.path, buf); n != 512<<20 {
					b.Fatalf("read %d bytes", n)
				}
			}
		})
	}
}

// BenchmarkStatWalk walks a Debian root filesystem and lstats every entry
// (find / -xdev | xargs stat), on the mounted layer and on the host.
func BenchmarkStatWalk(b *testing.B) {
	needFUSE(b)
	tarPath := os.Getenv("LAZYSNAP_ROOTFS_TAR")
	if tarPath == "" {
		b.Skip("LAZYSNAP_ROOTFS_TAR is not set (make rootfs builds one)")
	}
	dir := b.TempDir()
	mnt := mountTar(b, tarPath, dir)
	host := filepath.Join(filepath.Dir(tarPath), "bookworm")
	walk := func(b *testing.B, root string) int {
		n := 0
		err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			if _, err := os.Lstat(p); err != nil {
				return err
			}
			n++
			return nil
		})
		if err != nil {
			b.Fatal(err)
		}
		return n
	}
	for _, tc := range []struct{ name, root string }{{"host", host}, {"lazysnap", mnt}} {
		b.Run(tc.name, func(b *testing.B) {
			start := time.Now()
			n := walk(b, tc.root)
			first := time.Since(start)
			b.ReportAllocs()
			for b.Loop() {
				walk(b, tc.root)
			}
			b.ReportMetric(float64(first.Microseconds())/1000, "first-walk-ms")
			b.ReportMetric(float64(n), "entries")
		})
	}
}
