package zran

import (
	"bytes"
	stdgzip "compress/gzip"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"math/rand/v2"
	"os"
	"strings"
	"testing"
	"testing/iotest"

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

// index runs an Indexer over blob; when small is set, its input comes a few
// bytes at a time and its output is read a byte at a time.
func index(blob []byte, span int64, small bool) ([]byte, *Indexer, error) {
	var r io.Reader = bytes.NewReader(blob)
	if small {
		r = &trickle{r: r}
	}
	x, err := NewIndexer(r, span)
	if err != nil {
		return nil, nil, err
	}
	var out []byte
	if small {
		out, err = io.ReadAll(iotest.OneByteReader(x))
	} else {
		out, err = io.ReadAll(x)
	}
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
					if (small || span < 1<<20) && len(c.blob) > 200_000 {
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

// withHeader replaces the plain 10-byte header of blob (as stdGzip writes it)
// by one with the given flags and fields, and a header CRC if flagHCRC is set
// (corrupted if badCRC).
func withHeader(blob []byte, flg byte, fields []byte, badCRC bool) []byte {
	h := append([]byte{0x1f, 0x8b, 8, flg, 0, 0, 0, 0, 0, 255}, fields...)
	if flg&flagHCRC != 0 {
		c := crc32.ChecksumIEEE(h)
		if badCRC {
			c++
		}
		h = append(h, byte(c), byte(c>>8))
	}
	return append(h, blob[10:]...)
}

// TestHeaders: optional gzip header fields are skipped (and their CRC checked)
// as compress/gzip does, within its limits.
func TestHeaders(t *testing.T) {
	data := testData(20_000, 4)
	plain := stdGzip(t, data, 6)
	long := func(n int) []byte { return append(bytes.Repeat([]byte{'n'}, n), 0) }
	var named bytes.Buffer
	w := stdgzip.NewWriter(&named)
	w.Name, w.Comment, w.Extra = "file.tar", "a comment", []byte("extra field")
	w.Write(data)
	w.Close()
	tests := []struct {
		name string
		blob []byte
		ok   bool
	}{
		{"name-comment-extra", named.Bytes(), true},
		{"hcrc", withHeader(plain, flagHCRC|flagName, []byte("x\x00"), false), true},
		{"hcrc-bad", withHeader(plain, flagHCRC|flagName, []byte("x\x00"), true), false},
		{"name-511", withHeader(plain, flagName, long(511), false), true},
		{"name-512", withHeader(plain, flagName, long(512), false), false},
		{"comment-512", withHeader(plain, flagComment, long(512), false), false},
		{"extra-truncated", withHeader(plain, flagExtra, []byte{0xff, 0xff, 1, 2}, false), false},
		{"reserved-flags", withHeader(plain, 0xe0, nil, false), true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			want, werr := gunzip(tt.blob)
			if (werr == nil) != tt.ok {
				t.Fatalf("compress/gzip: %v", werr)
			}
			got, x, err := index(tt.blob, 5000, false)
			if (err == nil) != tt.ok || !bytes.Equal(got, want) {
				t.Fatalf("error %v, %d bytes; compress/gzip %v, %d bytes", err, len(got), werr, len(want))
			}
			if err != nil {
				if !errors.Is(err, ErrFormat) && !errors.Is(err, io.ErrUnexpectedEOF) {
					t.Errorf("error %v wraps no sentinel", err)
				}
				return
			}
			if cp := x.Checkpoints()[0]; cp.In != int64(bytes.Index(tt.blob, plain[10:])) {
				t.Errorf("first checkpoint at %d, not after the header", cp.In)
			}
			checkCheckpoints(t, tt.blob, want, x.Checkpoints(), 5000)
		})
	}
}

// TestResumeSpans: as SOCI reads a span, resuming at a checkpoint with only
// the compressed bytes up to the next checkpoint's In yields the span's whole
// output before failing for lack of input; a window of just the bytes since
// the member start also does.
func TestResumeSpans(t *testing.T) {
	for _, c := range streams(t) {
		if len(c.blob) > 200_000 {
			continue
		}
		t.Run(c.name, func(t *testing.T) {
			want, _ := gunzip(c.blob)
			_, x, err := index(c.blob, 8000, false)
			if err != nil {
				t.Fatal(err)
			}
			cps := x.Checkpoints()
			for i, cp := range cps[:len(cps)-1] {
				next := cps[i+1]
				start := cp.In - int64(min(cp.Bits, 1))
				if single := strings.HasPrefix(c.name, "std-") || strings.HasPrefix(c.name, "klauspost-"); single && i%2 == 1 {
					cp.Window = cp.Window[WindowSize-min(cp.Out, WindowSize):] // the history there is
				}
				r, err := Resume(bytes.NewReader(c.blob[start:next.In]), cp)
				if err != nil {
					t.Fatal(err)
				}
				got := make([]byte, next.Out-cp.Out)
				if _, err := io.ReadFull(r, got); err != nil || !bytes.Equal(got, want[cp.Out:next.Out]) {
					t.Fatalf("span %d: %v", i, err)
				}
				if _, err := r.Read(make([]byte, 1)); err != io.ErrUnexpectedEOF && err != io.EOF {
					t.Errorf("span %d: after its end: %v", i, err)
				}
			}
		})
	}
}

// failingReader returns its data and then an error.
type failingReader struct {
	data []byte
	err  error
}

func (f *failingReader) Read(p []byte) (int, error) {
	if len(f.data) == 0 {
		return 0, f.err
	}
	n := copy(p, f.data)
	f.data = f.data[n:]
	return n, nil
}

// TestReaderError: an error of the underlying reader is returned as it is,
// after the output decodable before it.
func TestReaderError(t *testing.T) {
	data := testData(300_000, 5)
	blob := stdGzip(t, data, 6)
	boom := errors.New("boom")
	x, err := NewIndexer(&failingReader{data: blob[:len(blob)/2], err: boom}, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(x)
	if !errors.Is(err, boom) {
		t.Fatalf("error %v, want boom", err)
	}
	if len(got) == 0 || !bytes.Equal(got, data[:len(got)]) {
		t.Fatalf("%d bytes before the error, not a prefix of the data", len(got))
	}
}

// TestResumeInvalid: checkpoints that cannot be valid are refused.
func TestResumeInvalid(t *testing.T) {
	tests := []struct {
		name string
		cp   Checkpoint
	}{
		{"bits", Checkpoint{In: 10, Bits: 8}},
		{"window", Checkpoint{In: 10, Window: make([]byte, WindowSize+1)}},
		{"out", Checkpoint{In: 10, Out: -1}},
		{"in", Checkpoint{In: 0, Bits: 3}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := Resume(bytes.NewReader([]byte{0}), tt.cp); !errors.Is(err, ErrFormat) {
				t.Errorf("error %v, want ErrFormat", err)
			}
		})
	}
}

// TestEmptyBlocksBounded: a stream that starts with many empty blocks gets a
// bounded number of checkpoints at offset 0 and decodes right.
func TestEmptyBlocksBounded(t *testing.T) {
	data := testData(10_000, 6)
	plain := stdGzip(t, data, 6)
	body := bytes.Repeat([]byte{0x00, 0x00, 0x00, 0xff, 0xff}, 10_000) // empty stored blocks, not final
	blob := append(append(bytes.Clone(plain[:10]), body...), plain[10:]...)
	want, err := gunzip(blob)
	if err != nil || !bytes.Equal(want, data) {
		t.Fatalf("compress/gzip: %v", err)
	}
	got, x, err := index(blob, 0, false)
	if err != nil || !bytes.Equal(got, want) {
		t.Fatalf("%v, %d bytes", err, len(got))
	}
	zero := 0
	for _, cp := range x.Checkpoints() {
		if cp.Out == 0 {
			zero++
		}
	}
	if zero != maxAtZero {
		t.Errorf("%d checkpoints at offset 0, want %d", zero, maxAtZero)
	}
	checkCheckpoints(t, blob, want, x.Checkpoints(), 0)
}
