package fs_test

import (
	"crypto/rand"
	"os"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"

	"github.com/lazysnap/lazysnap/fs/fetch"
	"github.com/lazysnap/lazysnap/internal/testtar"
	"golang.org/x/sys/unix"
)

// BenchmarkFuseRequest measures what one FUSE request costs the server:
// O_DIRECT reads of a fetched file (every read is a READ request, none
// served from the page cache or by passthrough, since a cached-mode handle
// is held open) and lstat of a name the kernel does not cache.
func BenchmarkFuseRequest(b *testing.B) {
	requireFUSE(b)
	data := make([]byte, 8<<20)
	rand.Read(data)
	l, _ := layerOf(b, testtar.Files([][2]string{{"big", string(data)}}), fetch.Options{NoBackground: true, NoPrefetch: true})
	mnt, _ := mount(b, l)
	p := filepath.Join(mnt, "big")
	keep, err := os.Open(p) // cached mode: later opens are not passthrough
	if err != nil {
		b.Fatal(err)
	}
	defer keep.Close()
	buf := make([]byte, len(data))
	if _, err := keep.ReadAt(buf, 0); err != nil {
		b.Fatal(err)
	}
	for _, bs := range []int{4 << 10, 128 << 10} {
		b.Run("read-direct-"+strconv.Itoa(bs>>10)+"k", func(b *testing.B) {
			fd, err := unix.Open(p, unix.O_RDONLY|unix.O_DIRECT, 0)
			if err != nil {
				b.Fatal(err)
			}
			defer unix.Close(fd)
			mem, err := unix.Mmap(-1, 0, bs, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_ANON|unix.MAP_PRIVATE) // aligned
			if err != nil {
				b.Fatal(err)
			}
			defer unix.Munmap(mem)
			b.SetBytes(int64(bs))
			b.ReportAllocs()
			off := int64(0)
			for b.Loop() {
				if n, err := unix.Pread(fd, mem, off); err != nil || n != bs {
					b.Fatalf("pread at %d: %d, %v", off, n, err)
				}
				if off += int64(bs); off >= int64(len(data)) {
					off = 0
				}
			}
		})
	}
	b.Run("lstat-missing", func(b *testing.B) {
		// a negative entry is cached: a new name every time
		b.ReportAllocs()
		i := 0
		for b.Loop() {
			i++
			var st syscall.Stat_t
			if err := syscall.Lstat(filepath.Join(mnt, "missing-"+strconv.Itoa(i)), &st); err != syscall.ENOENT {
				b.Fatal(err)
			}
		}
	})
}
