package zran

import (
	"bytes"
	stdgzip "compress/gzip"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"testing"

	kgzip "github.com/klauspost/compress/gzip"
)

// testData is deterministic data that compresses like real files: words,
// runs, and some incompressible stretches.
func testData(n int, seed uint64) []byte {
	rng := rand.New(rand.NewPCG(seed, 1))
	words := []string{"the ", "lazy ", "snapshot ", "layer ", "gzip ", "tar ", "/usr/lib/", "\n", "func ", "{\n\t", "return nil\n", "0000", "ELF"}
	var b bytes.Buffer
	for b.Len() < n {
		switch rng.IntN(20) {
		case 0: // random bytes
			k := rng.IntN(3000)
			for range k {
				b.WriteByte(byte(rng.Uint32()))
			}
		case 1: // a run
			b.Write(bytes.Repeat([]byte{byte(rng.IntN(256))}, rng.IntN(1000)))
		case 2: // a repeat of earlier data, far back
			if b.Len() > 40000 {
				off := b.Len() - 1 - rng.IntN(32000)
				k := rng.IntN(500)
				b.Write(bytes.Clone(b.Bytes()[off:min(off+k, b.Len())]))
			}
		default:
			for range 20 {
				b.WriteString(words[rng.IntN(len(words))])
			}
		}
	}
	return b.Bytes()[:n]
}

func stdGzip(t testing.TB, data []byte, level int) []byte {
	var b bytes.Buffer
	w, err := stdgzip.NewWriterLevel(&b, level)
	if err != nil {
		t.Fatal(err)
	}
	w.Write(data)
	w.Close()
	return b.Bytes()
}

func kGzip(t testing.TB, data []byte, level int) []byte {
	var b bytes.Buffer
	w, err := kgzip.NewWriterLevel(&b, level)
	if err != nil {
		t.Fatal(err)
	}
	w.Write(data)
	w.Close()
	return b.Bytes()
}

// members compresses each part as its own gzip member and concatenates them.
func members(t testing.TB, level int, parts ...[]byte) []byte {
	var b []byte
	for _, p := range parts {
		b = append(b, stdGzip(t, p, level)...)
	}
	return b
}

// gunzip is compress/gzip's output and error.
func gunzip(blob []byte) ([]byte, error) {
	r, err := stdgzip.NewReader(bytes.NewReader(blob))
	if err != nil {
		return nil, err
	}
	return io.ReadAll(r)
}

// index runs an Indexer over blob, reading through a reader that returns
// few bytes at a time when small is set.
func index(blob []byte, span int64, small bool) ([]byte, *Indexer, error) {
	var r io.Reader = bytes.NewReader(blob)
	if small {
		r = &trickle{r: r}
	}
	x, err := NewIndexer(r, span)
	if err != nil {
		return nil, nil, err
	}
	out, err := io.ReadAll(x)
	return out, x, err
}

// trickle returns 0 to 7 bytes per Read.
type trickle struct {
	r io.Reader
	n int
}

func (t *trickle) Read(p []byte) (int, error) {
	t.n++
	return t.r.Read(p[:min(len(p), t.n%8)])
}

type streamCase struct {
	name string
	blob []byte
}

func streams(t testing.TB) []streamCase {
	small := testData(100_000, 1)
	large := testData(3<<20, 2)
	var cs []streamCase
	for l := 1; l <= 9; l++ {
		cs = append(cs, streamCase{fmt.Sprintf("std-%d", l), stdGzip(t, small, l)})
	}
	cs = append(cs,
		streamCase{"std-huffman-only", stdGzip(t, small, stdgzip.HuffmanOnly)},
		streamCase{"std-stored", stdGzip(t, small, stdgzip.NoCompression)},
		streamCase{"std-empty", stdGzip(t, nil, 6)},
		streamCase{"std-one-byte", stdGzip(t, []byte{'x'}, 6)},
		streamCase{"std-large-6", stdGzip(t, large, 6)},
		streamCase{"std-large-1", stdGzip(t, large, 1)},
		streamCase{"klauspost-1", kGzip(t, small, 1)},
		streamCase{"klauspost-6", kGzip(t, large, 6)},
		streamCase{"klauspost-9", kGzip(t, small, 9)},
		streamCase{"klauspost-huffman-only", kGzip(t, small, kgzip.HuffmanOnly)},
		streamCase{"klauspost-stateless", kGzip(t, large, kgzip.StatelessCompression)},
		streamCase{"multi-member", members(t, 6, small[:40000], small[40000:41000], small[41000:])},
		streamCase{"empty-members", members(t, 6, nil, small[:5000], nil, nil, small[5000:70000], nil)},
		streamCase{"only-empty-members", members(t, 6, nil, nil, nil)},
		streamCase{"multi-member-stored", members(t, 0, small[:50000], small[50000:])},
	)
	for _, name := range []string{"pigz", "mixed"} {
		b, err := os.ReadFile("testdata/" + name + ".gz")
		if err != nil {
			t.Fatal(err)
		}
		cs = append(cs, streamCase{name, b})
	}
	return cs
}

// TestIndexerMatchesGzip: the Indexer's output equals compress/gzip's, with
// big and tiny reads, and resuming from every checkpoint gives the suffix.
func TestIndexerMatchesGzip(t *testing.T) {
	for _, c := range streams(t) {
		t.Run(c.name, func(t *testing.T) {
			want, err := gunzip(c.blob)
			if err != nil {
				t.Fatal(err)
			}
			for _, span := range []int64{0, 10_000, 1 << 20} {
				for _, small := range []bool{false, true} {
					if (small || span == 0) && len(c.blob) > 200_000 {
						continue // slow, and the small cases cover it
					}
					got, x, err := index(c.blob, span, small)
					if err != nil {
						t.Fatalf("span %d small %v: %v", span, small, err)
					}
					if !bytes.Equal(got, want) {
						t.Fatalf("span %d small %v: output differs (%d bytes, want %d)", span, small, len(got), len(want))
					}
					if x.CompressedSize() != int64(len(c.blob)) {
						t.Errorf("CompressedSize %d, want %d", x.CompressedSize(), len(c.blob))
					}
					checkCheckpoints(t, c.blob, want, x.Checkpoints(), span)
				}
			}
		})
	}
}

func checkCheckpoints(t *testing.T, blob, want []byte, cps []Checkpoint, span int64) {
	t.Helper()
	if len(cps) == 0 || cps[0].Out != 0 || cps[0].Bits != 0 {
		t.Fatalf("first checkpoint %+v", cps[:min(len(cps), 1)])
	}
	for i, cp := range cps {
		if i > 0 && cp.Out != 0 && cp.Out-cps[i-1].Out <= span {
			t.Errorf("checkpoint %d at %d: only %d after the previous", i, cp.Out, cp.Out-cps[i-1].Out)
		}
		if len(cp.Window) != WindowSize {
			t.Fatalf("checkpoint %d: window %d bytes", i, len(cp.Window))
		}
		lo := max(cp.Out-WindowSize, 0)
		if !bytes.Equal(cp.Window[WindowSize-(cp.Out-lo):], want[lo:cp.Out]) {
			t.Fatalf("checkpoint %d: window is not the output before %d", i, cp.Out)
		}
		start := cp.In
		if cp.Bits > 0 {
			start--
		}
		r, err := Resume(bytes.NewReader(blob[start:]), cp)
		if err != nil {
			t.Fatalf("checkpoint %d %+v: %v", i, cp, err)
		}
		got, err := io.ReadAll(r)
		if err != nil {
			t.Fatalf("checkpoint %d (in %d bits %d out %d): %v", i, cp.In, cp.Bits, cp.Out, err)
		}
		if !bytes.Equal(got, want[cp.Out:]) {
			t.Fatalf("checkpoint %d (in %d bits %d out %d): resumed output differs", i, cp.In, cp.Bits, cp.Out)
		}
	}
}

// TestErrors: corrupt input fails with the package's sentinels.
func TestErrors(t *testing.T) {
	good := stdGzip(t, testData(50_000, 3), 6)
	flip := func(i int) []byte { b := bytes.Clone(good); b[i] ^= 0xff; return b }
	tests := []struct {
		name string
		blob []byte
		want error
	}{
		{"crc", flip(len(good) - 6), ErrChecksum},
		{"isize", flip(len(good) - 2), ErrChecksum},
		{"magic", flip(0), ErrFormat},
		{"method", flip(2), ErrFormat},
		{"block-type", append(bytes.Clone(good[:10]), 0x07), ErrFormat},
		{"truncated", good[:len(good)/2], io.ErrUnexpectedEOF},
		{"truncated-trailer", good[:len(good)-3], io.ErrUnexpectedEOF},
		{"truncated-header", good[:5], io.ErrUnexpectedEOF},
		{"empty", nil, io.ErrUnexpectedEOF},
		{"trailing-garbage", append(bytes.Clone(good), []byte("garbage!!!!!")...), ErrFormat},
		{"stored-length", append(bytes.Clone(good[:10]), 0x01, 5, 0, 5, 0), ErrFormat},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, _, err := index(tt.blob, 1<<20, false)
			if !errors.Is(err, tt.want) {
				t.Errorf("error %v, want %v", err, tt.want)
			}
			if _, gerr := gunzip(tt.blob); gerr == nil {
				t.Errorf("compress/gzip accepts it")
			}
		})
	}
}
