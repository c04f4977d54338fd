package benchmarks

import (
	"context"
	"io"
	"os"
	"testing"

	refestargz "github.com/containerd/stargz-snapshotter/estargz"
	"github.com/lazysnap/lazysnap/estargz"
)

// countingWriter counts what is written to it and discards it.
type countingWriter struct{ n int64 }

func (w *countingWriter) Write(p []byte) (int, error) { w.n += int64(len(p)); return len(p), nil }

func rootfsTar(b *testing.B) *io.SectionReader {
	path := os.Getenv("LAZYSNAP_ROOTFS_TAR")
	if path == "" {
		b.Skip("LAZYSNAP_ROOTFS_TAR is not set (make rootfs builds one)")
	}
	f, err := os.Open(path)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { f.Close() })
	st, err := f.Stat()
	if err != nil {
		b.Fatal(err)
	}
	// read it once so that every case starts from the page cache
	if _, err := io.Copy(io.Discard, f); err != nil {
		b.Fatal(err)
	}
	return io.NewSectionReader(f, 0, st.Size())
}

// BenchmarkConvert converts a root filesystem tar to eStargz with our writer
// and with the reference library. MB/s is of the uncompressed tar; out-bytes
// is the blob's size.
func BenchmarkConvert(b *testing.B) {
	src := rootfsTar(b)
	for _, tc := range []struct {
		name string
		run  func() (int64, error)
	}{
		{"lazysnap", func() (int64, error) {
			var w countingWriter
			_, err := estargz.Convert(context.Background(), &w, src)
			return w.n, err
		}},
		{"lazysnap-1cpu", func() (int64, error) {
			var w countingWriter
			_, err := estargz.Convert(context.Background(), &w, src, estargz.WithConcurrency(1))
			return w.n, err
		}},
		{"lazysnap-level9", func() (int64, error) {
			var w countingWriter
			_, err := estargz.Convert(context.Background(), &w, src, estargz.WithCompressionLevel(9))
			return w.n, err
		}},
		{"reference-gzip9", func() (int64, error) {
			blob, err := refestargz.Build(src, refestargz.WithCompressionLevel(9))
			if err != nil {
				return 0, err
			}
			defer blob.Close()
			var w countingWriter
			_, err = io.Copy(&w, blob)
			return w.n, err
		}},
	} {
		b.Run(tc.name, func(b *testing.B) {
			b.SetBytes(src.Size())
			b.ReportAllocs()
			var out int64
			for b.Loop() {
				n, err := tc.run()
				if err != nil {
					b.Fatal(err)
				}
				out = n
			}
			b.ReportMetric(float64(out), "out-bytes")
		})
	}
}
