package lazy

import (
	"bytes"
	"testing"

	"github.com/lazysnap/lazysnap/index"
	"github.com/lazysnap/lazysnap/internal/testtar"
	"github.com/lazysnap/lazysnap/layer"
	"github.com/lazysnap/lazysnap/soci"
	"github.com/opencontainers/go-digest"
)

// FuzzSociIndex: whatever zTOC soci.Unmarshal accepts, laying it out as
// an index (sociEntries, index.Build) and decoding a chunk of every file
// neither panics nor serves bytes that did not verify.
func FuzzSociIndex(f *testing.F) {
	blob, _ := testtar.SociLayer(3)
	z, err := soci.Build(bytesReader(blob), soci.BuildOptions{SpanSize: 64 << 10})
	if err != nil {
		f.Fatal(err)
	}
	good := soci.Marshal(z)
	f.Add(good)
	z.Files[3].Name = z.Files[2].Name // a name twice
	f.Add(soci.Marshal(z))
	z.Files[3].Name = "usr/lib/small00/x" // a file under a file
	f.Add(soci.Marshal(z))
	f.Fuzz(func(t *testing.T, b []byte) {
		z, err := soci.Unmarshal(b, 10000)
		if err != nil {
			return
		}
		ents, err := sociEntries(z)
		if err != nil {
			return
		}
		idx, err := index.Build(ents, layer.Info{DataEnd: z.CompressedSize})
		if err != nil {
			return
		}
		dec := newSociDecoder(z, idx)
		for i := range ents {
			for _, c := range ents[i].Chunks {
				raw := make([]byte, c.CompressedSize())
				if int64(len(blob)) >= c.End {
					copy(raw, blob[c.Offset:c.End])
				}
				data, err := dec.Decode(nil, &c, raw)
				if err != nil {
					continue
				}
				if sum := digest.FromBytes(raw); sum != z.SpanDigests[c.Span] || int64(len(data)) != c.Size {
					t.Fatalf("served %d bytes of span %d, which does not verify (%s, want %s)", len(data), c.Span, sum, z.SpanDigests[c.Span])
				}
			}
		}
		_ = idx
	})
}

func bytesReader(b []byte) *bytes.Reader { return bytes.NewReader(b) }
