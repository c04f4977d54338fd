package unpack_test

import (
	"archive/tar"
	"bytes"
	"fmt"
	"os"
	"testing"

	"github.com/lazysnap/lazysnap/unpack"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// BenchmarkUnpackSmallFiles unpacks a gzip layer of 20,000 files of 100
// to 499 bytes, indexing it (a line-rate pull's pass), and without the
// index: where the pipes between fetch, inflate and apply once cost more
// CPU than writing the files (each read of a pipe by the tar reader, a
// few hundred bytes, was a hand-over between goroutines).
func BenchmarkUnpackSmallFiles(b *testing.B) {
	var tb bytes.Buffer
	tw := tar.NewWriter(&tb)
	for i := range 20000 {
		if i%1000 == 0 {
			tw.WriteHeader(&tar.Header{Name: fmt.Sprintf("d%d/", i/1000), Typeflag: tar.TypeDir, Mode: 0o755})
		}
		body := bytes.Repeat([]byte{byte(i)}, 100+i%400)
		tw.WriteHeader(&tar.Header{Name: fmt.Sprintf("d%d/f%d", i/1000, i), Typeflag: tar.TypeReg, Mode: 0o644, Size: int64(len(body))})
		tw.Write(body)
	}
	tw.Close()
	blob := gzipped(b, tb.Bytes())
	desc := ocispec.Descriptor{MediaType: ocispec.MediaTypeImageLayerGzip, Digest: digest.FromBytes(blob), Size: int64(len(blob))}
	for _, index := range []bool{true, false} {
		b.Run(fmt.Sprintf("index=%v", index), func(b *testing.B) {
			b.SetBytes(int64(tb.Len()))
			b.ReportAllocs()
			for b.Loop() {
				dir, err := os.MkdirTemp(b.TempDir(), "layer")
				if err != nil {
					b.Fatal(err)
				}
				if _, err := unpack.Unpack(b.Context(), dir, desc, serve(blob, -1), unpack.Options{Index: index}); err != nil {
					b.Fatal(err)
				}
				b.StopTimer()
				os.RemoveAll(dir)
				b.StartTimer()
			}
		})
	}
}
