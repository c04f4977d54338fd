package zstdchunked_test

import (
	"bytes"
	"encoding/binary"
	"errors"
	"testing"

	"github.com/klauspost/compress/zstd"
	"github.com/lazysnap/lazysnap/estargz"
	"github.com/lazysnap/lazysnap/internal/testtar"
	"github.com/lazysnap/lazysnap/zstdchunked"
	"github.com/opencontainers/go-digest"
)

// withTOC returns a legacy-layout blob of data followed by toc (JSON) and
// the digest of its compressed TOC.
func withTOC(t testing.TB, data, toc []byte) ([]byte, digest.Digest) {
	enc, err := zstd.NewWriter(nil)
	if err != nil {
		t.Fatal(err)
	}
	defer enc.Close()
	ztoc := enc.EncodeAll(toc, nil)
	f := zstdchunked.Footer{Offset: int64(len(data)) + 8, Size: int64(len(ztoc)), RawSize: int64(len(toc)), Legacy: true}
	return f.Append(zstdchunked.AppendSkippable(bytes.Clone(data), ztoc)), digest.SHA256.FromBytes(ztoc)
}

// TestHostileFooter: footers that lie are rejected with ErrFormat, never
// read past the blob.
func TestHostileFooter(t *testing.T) {
	blob, res := convert(t, testtar.Synthetic(64<<10))
	good := blob[len(blob)-zstdchunked.LegacyFooterSize:]
	field := func(i int, v uint64) []byte {
		b := bytes.Clone(blob)
		binary.LittleEndian.PutUint64(b[len(b)-zstdchunked.LegacyFooterSize+8+8*i:], v)
		return b
	}
	for _, tc := range []struct {
		name string
		blob []byte
	}{
		{"magic", append(bytes.Clone(blob[:len(blob)-1]), 'X')},
		{"frame length", func() []byte {
			b := bytes.Clone(blob)
			b[len(b)-zstdchunked.LegacyFooterSize+4]++
			return b
		}()},
		{"not skippable", func() []byte {
			b := bytes.Clone(blob)
			b[len(b)-zstdchunked.LegacyFooterSize] = 0
			return b
		}()},
		{"offset past blob", field(0, uint64(len(blob)))},
		{"offset huge", field(0, 1<<63)},
		{"offset zero", field(0, 0)},
		{"size past footer", field(1, uint64(len(blob)))},
		{"size zero", field(1, 0)},
		{"raw size zero", field(2, 0)},
		{"type", field(3, 2)},
		{"short blob", good[10:]},
		{"current magic, legacy length", func() []byte {
			b := bytes.Clone(blob)
			copy(b[len(b)-8:], "GNUlInUx")
			return b
		}()},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, _, err := decode(tc.blob, res.TOCDigest); !errors.Is(err, zstdchunked.ErrFormat) {
				t.Errorf("got %v, want ErrFormat", err)
			}
		})
	}
	if _, _, err := decode(field(2, 1<<40), res.TOCDigest); err == nil {
		t.Error("raw size past the blob accepted")
	}
}

// TestHostileTOC: TOCs that their digest vouches for but that break the
// format's rules are rejected.
func TestHostileTOC(t *testing.T) {
	data := bytes.Repeat([]byte{0}, 100)
	sha := digest.SHA256.FromBytes([]byte("x")).String()
	for _, tc := range []struct {
		name, toc string
		err       error
	}{
		{"chunk past data", `{"version":1,"entries":[{"type":"reg","name":"a","size":1,"offset":100,"digest":"` + sha + `"}]}`, zstdchunked.ErrFormat},
		{"negative offset", `{"version":1,"entries":[{"type":"reg","name":"a","size":1,"offset":-1,"digest":"` + sha + `"}]}`, zstdchunked.ErrFormat},
		{"no digest", `{"version":1,"entries":[{"type":"reg","name":"a","size":1,"offset":5}]}`, zstdchunked.ErrFormat},
		{"chunks short", `{"version":1,"entries":[{"type":"reg","name":"a","size":10,"offset":5,"chunkSize":4,"chunkDigest":"` + sha + `"}]}`, zstdchunked.ErrFormat},
		{"escaping name", `{"version":1,"entries":[{"type":"dir","name":"../x"}]}`, zstdchunked.ErrFormat},
		{"duplicate", `{"version":1,"entries":[{"type":"dir","name":"x"},{"type":"symlink","name":"x","linkName":"y"}]}`, zstdchunked.ErrFormat},
		{"version", `{"version":2,"entries":[]}`, zstdchunked.ErrFormat},
		{"not JSON", `{"version":1,"entries":[`, zstdchunked.ErrFormat},
		{"overlap", `{"version":1,"entries":[{"type":"reg","name":"a","size":4,"offset":5,"innerOffset":0,"chunkDigest":"` + sha + `"},{"type":"reg","name":"b","size":4,"offset":5,"innerOffset":2,"chunkDigest":"` + sha + `"}]}`, zstdchunked.ErrFormat},
		{"span", `{"version":1,"entries":[{"type":"reg","name":"a","size":4,"offset":5,"innerOffset":99999999999,"chunkDigest":"` + sha + `"}]}`, zstdchunked.ErrTooLarge},
	} {
		t.Run(tc.name, func(t *testing.T) {
			blob, d := withTOC(t, data, []byte(tc.toc))
			if _, _, err := decode(blob, d); !errors.Is(err, tc.err) {
				t.Errorf("got %v, want %v", err, tc.err)
			}
		})
	}
	blob, d := withTOC(t, data, []byte(`{"version":1,"entries":[]}`))
	if _, _, err := zstdchunked.DecodeTOC(sectionOf(blob), &collector{}, zstdchunked.Options{Digest: d, MaxTOCSize: 10}); !errors.Is(err, zstdchunked.ErrTooLarge) {
		t.Errorf("TOC over the cap: %v", err)
	}
}

// TestDecodeChunkBounds: chunk places a TOC could not give are refused
// before anything is decompressed.
func TestDecodeChunkBounds(t *testing.T) {
	var dec zstdchunked.Decoder
	for _, c := range []estargz.Chunk{
		{Size: 0}, {Size: 1, InnerOffset: -1}, {Size: estargz.MaxChunkSpan, InnerOffset: 1},
	} {
		if _, err := dec.Decode(nil, &c, nil); !errors.Is(err, zstdchunked.ErrFormat) {
			t.Errorf("%+v: %v", c, err)
		}
	}
}
