package zstdchunked_test

import (
	"testing"

	"github.com/lazysnap/lazysnap/estargz"
	"github.com/lazysnap/lazysnap/internal/testtar"
	"github.com/lazysnap/lazysnap/zstdchunked"
)

// BenchmarkDecodeTOC decodes and verifies the TOC of a converted layer.
func BenchmarkDecodeTOC(b *testing.B) {
	blob, res := convert(b, testtar.Synthetic(1<<20), estargz.WithChunkSize(16<<10))
	b.SetBytes(int64(len(blob)))
	b.ReportAllocs()
	for b.Loop() {
		if _, _, err := decode(blob, res.TOCDigest); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkDecodeChunk decompresses and verifies a 4 MiB chunk.
func BenchmarkDecodeChunk(b *testing.B) {
	blob, res := convert(b, testtar.Synthetic(4<<20))
	c, _, err := decode(blob, res.TOCDigest)
	if err != nil {
		b.Fatal(err)
	}
	var big *estargz.Chunk
	for i := range c.entries {
		for j := range c.entries[i].Chunks {
			if ch := &c.entries[i].Chunks[j]; big == nil || ch.Size > big.Size {
				big = ch
			}
		}
	}
	var dec zstdchunked.Decoder
	dst := make([]byte, big.Size)
	b.SetBytes(big.Size)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := dec.Decode(dst, big, blob[big.Offset:big.End]); err != nil {
			b.Fatal(err)
		}
	}
}
