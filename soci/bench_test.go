package soci_test

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"fmt"
	"math/rand/v2"
	"testing"

	"github.com/lazysnap/lazysnap/soci"
)

// benchLayer is a 32 MiB-uncompressed gzip tar (default level) of files
// like a distribution's: text-like (compressible about 3×) and some
// incompressible.
func benchLayer(b *testing.B) []byte {
	r := rand.New(rand.NewPCG(3, 4))
	words := []string{"import ", "def ", "return ", "self", ".", "(", ")", ":\n", "    ", "value", "_", "if ", "else", "for ", "in ", "0", "1", "\"", "class ", "None"}
	var buf bytes.Buffer
	gz := gzip.NewWriter(&buf)
	tw := tar.NewWriter(gz)
	for i, total := 0, 0; total < 32<<20; i++ {
		n := 512 + r.IntN(64<<10)
		var data []byte
		if i%10 == 0 {
			data = make([]byte, n)
			for j := range data {
				data[j] = byte(r.Uint32())
			}
		} else {
			var sb bytes.Buffer
			for sb.Len() < n {
				sb.WriteString(words[r.IntN(len(words))])
			}
			data = sb.Bytes()
		}
		tw.WriteHeader(&tar.Header{Name: fmt.Sprintf("usr/lib/f%05d", i), Typeflag: tar.TypeReg, Mode: 0o644, Size: int64(len(data))})
		tw.Write(data)
		total += len(data)
	}
	tw.Close()
	gz.Close()
	return buf.Bytes()
}

// BenchmarkBuild: zTOC building throughput, in compressed bytes of layer
// (the goal: at least 150 MB/s on one core of the 2-core machine; layers
// are indexed in parallel). Reports the zTOC's size against the layer's.
func BenchmarkBuild(b *testing.B) {
	blob := benchLayer(b)
	b.SetBytes(int64(len(blob)))
	b.ReportAllocs()
	var z *soci.Ztoc
	for b.Loop() {
		var err error
		if z, err = soci.Build(bytes.NewReader(blob), soci.BuildOptions{}); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(100*float64(len(soci.Marshal(z)))/float64(len(blob)), "ztoc%")
}
