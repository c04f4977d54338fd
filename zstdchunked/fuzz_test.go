package zstdchunked_test

import (
	"bytes"
	"strconv"
	"testing"

	"github.com/klauspost/compress/zstd"
	"github.com/lazysnap/lazysnap/estargz"
	"github.com/lazysnap/lazysnap/internal/testtar"
	"github.com/lazysnap/lazysnap/zstdchunked"
	"github.com/opencontainers/go-digest"
)

// FuzzParseFooter: any tail either parses to a footer whose TOC (and
// tar-split) lie inside the blob before the footer, or fails.
func FuzzParseFooter(f *testing.F) {
	blob, _ := convert(f, testtar.Synthetic(16<<10))
	f.Add(blob[len(blob)-zstdchunked.LegacyFooterSize:], int64(len(blob)))
	cs, _ := containersBlob(f, testtar.Synthetic(16<<10), 1<<20, false)
	f.Add(cs[len(cs)-zstdchunked.FooterSize:], int64(len(cs)))
	f.Add(cs[len(cs)-zstdchunked.FooterSize:], int64(zstdchunked.FooterSize))
	f.Fuzz(func(t *testing.T, tail []byte, size int64) {
		ft, n, err := zstdchunked.ParseFooter(tail, size)
		if err != nil {
			return
		}
		end := size - int64(n)
		if ft.Offset < 8 || ft.Size <= 0 || ft.Offset+ft.Size > end || ft.DataEnd() < 0 {
			t.Fatalf("footer %+v accepted in a %d-byte blob (footer %d)", ft, size, n)
		}
		if ft.TarSplitSize > 0 && (ft.TarSplitOffset < ft.Offset+ft.Size || ft.TarSplitOffset+ft.TarSplitSize > end) {
			t.Fatalf("tar-split of %+v accepted", ft)
		}
		if !bytes.Equal(ft.Append(nil), tail[len(tail)-n:]) && ft.Legacy {
			t.Fatalf("footer %+v does not write back as %x", ft, tail[len(tail)-n:])
		}
	})
}

// FuzzParsePosition: a parsed position prints back as it parsed.
func FuzzParsePosition(f *testing.F) {
	for _, s := range []string{"100:20:40:1", "0:0:0:1", "1:2:3:2", "-1:2:3:1", "1:2:3", "18446744073709551615:1:1:1"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		p, err := zstdchunked.ParsePosition(s)
		if err != nil {
			return
		}
		q, err := zstdchunked.ParsePosition(p.String())
		if err != nil || q != p || p.Offset < 0 || p.Size < 0 || p.RawSize < 0 {
			t.Fatalf("%q parsed to %+v, which reparses to %+v, %v", s, p, q, err)
		}
	})
}

// FuzzDecodeTOC: any TOC JSON (vouched for by its digest) over a blob of
// frames either fails or gives chunks inside the blob's data, and every
// chunk that decodes decodes to bytes of its digest.
func FuzzDecodeTOC(f *testing.F) {
	enc, err := zstd.NewWriter(nil)
	if err != nil {
		f.Fatal(err)
	}
	data := append(enc.EncodeAll([]byte("hello"), nil), enc.EncodeAll(bytes.Repeat([]byte{0}, 4096), nil)...)
	hello := digest.SHA256.FromString("hello").String()
	zeros := digest.SHA256.FromBytes(make([]byte, 4096)).String()
	second := len(enc.EncodeAll([]byte("hello"), nil))
	enc.Close()
	for _, s := range []string{
		`{"version":1,"entries":[{"type":"reg","name":"a","size":5,"digest":"` + hello + `","endOffset":9}]}`,
		`{"version":1,"entries":[{"type":"dir","name":"d/"},{"type":"reg","name":"d/z","size":4096,"offset":` + itoa(second) + `,"digest":"` + zeros + `","chunkType":"zeros"}]}`,
		`{"version":1,"entries":[{"type":"reg","name":"a","size":4101,"offset":0,"chunkSize":5,"chunkDigest":"` + hello + `"},{"type":"chunk","name":"a","offset":` + itoa(second) + `,"chunkOffset":5,"chunkDigest":"` + zeros + `","chunkType":"zeros"}],"tarSplitDigest":"` + hello + `"}`,
		`{"version":1,"entries":[{"type":"reg","name":"a","size":2,"offset":0,"innerOffset":3,"chunkDigest":"` + hello + `"},{"type":"hardlink","name":"b","linkName":"a"}]}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, toc []byte) {
		blob, d := withTOC(t, data, toc)
		c, ft, err := decode(blob, d)
		if err != nil {
			return
		}
		var dec zstdchunked.Decoder
		for _, e := range c.entries {
			for i := range e.Chunks {
				ch := &e.Chunks[i]
				if ch.Offset < 0 || ch.End <= ch.Offset || ch.End > ft.DataEnd() {
					t.Fatalf("%q: chunk [%d, %d) outside the data [0, %d)", e.Name, ch.Offset, ch.End, ft.DataEnd())
				}
				b, err := dec.Decode(nil, ch, blob[ch.Offset:ch.End])
				if err == nil && digest.SHA256.FromBytes(b) != ch.Digest {
					t.Fatalf("%q: chunk decoded to bytes not of its digest", e.Name)
				}
			}
		}
	})
}

// FuzzDecodeChunk: any bytes either fail or decode to the chunk's digest.
func FuzzDecodeChunk(f *testing.F) {
	enc, err := zstd.NewWriter(nil)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(enc.EncodeAll([]byte("hello world"), nil), int64(5), int64(6))
	f.Add(enc.EncodeAll(make([]byte, 1<<16), nil), int64(100), int64(0))
	f.Add([]byte{0x28, 0xb5, 0x2f, 0xfd, 0, 0x58, 0x1, 0, 0}, int64(1), int64(0))
	enc.Close()
	f.Fuzz(func(t *testing.T, raw []byte, size, inner int64) {
		var dec zstdchunked.Decoder
		want := digest.SHA256.FromString("world")
		if size > 1<<20 {
			size = 1 << 20
		}
		b, err := dec.Decode(nil, &estargz.Chunk{Size: size, InnerOffset: inner, Digest: want}, raw)
		if err == nil && digest.SHA256.FromBytes(b) != want {
			t.Fatal("decoded bytes not of the digest")
		}
	})
}

func itoa(n int) string { return strconv.Itoa(n) }
