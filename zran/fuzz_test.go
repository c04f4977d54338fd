package zran

import (
	"bytes"
	stdgzip "compress/gzip"
	"errors"
	"io"
	"math/rand/v2"
	"testing"
)

// fuzzLimit bounds how much output a fuzz case reads (inputs can be bombs).
const fuzzLimit = 4 << 20

// readLimited reads r to its end or to limit bytes; it stops without error at
// the limit.
func readLimited(r io.Reader, limit int64) ([]byte, error) {
	b, err := io.ReadAll(io.LimitReader(r, limit))
	return b, err
}

func fuzzSeeds(f *testing.F) {
	data := testData(70_000, 9)
	for _, blob := range [][]byte{
		stdGzip(f, data[:3000], 6),
		stdGzip(f, data[:3000], 1),
		stdGzip(f, data[:2000], stdgzip.HuffmanOnly),
		stdGzip(f, data[:2000], stdgzip.NoCompression),
		stdGzip(f, nil, 6),
		kGzip(f, data[:3000], 9),
		members(f, 6, data[:100], nil, data[100:300]),
		stdGzip(f, data[:20000], 6),
	} {
		f.Add(blob)
	}
	for _, blob := range wrapSeeds(f) {
		f.Add(blob)
	}
}

// wrapSeeds are small streams whose output is several times the decoder's
// output area, so that the seeds wrap its buffer: a compressor's long
// matches over repeated data, and 258-byte matches that cross the area's
// edge one byte after a literal (issue 21's panic).
func wrapSeeds(f *testing.F) [][]byte {
	rep := bytes.Repeat(testData(5000, 11), 4*outSize/5000)
	edge := edgeCase{"", 1, 258, 8}
	w := edge.begin(rand.New(rand.NewPCG(1, 2)), 13) // 13: a match at the edge
	blob, _ := edge.end(f, w, rand.New(rand.NewPCG(3, 4)), 4*outSize)
	return [][]byte{stdGzip(f, rep, 9), kGzip(f, rep, 1), blob}
}

// FuzzIndexer: the Indexer gives compress/gzip's bytes or fails where it
// fails, and resuming from each checkpoint gives the rest of the output.
func FuzzIndexer(f *testing.F) {
	fuzzSeeds(f)
	f.Fuzz(func(t *testing.T, blob []byte) {
		var want []byte
		zr, werr := stdgzip.NewReader(bytes.NewReader(blob))
		if werr == nil {
			want, werr = readLimited(zr, fuzzLimit)
		}
		var got []byte
		x, err := NewIndexer(bytes.NewReader(blob), 1000)
		if err == nil {
			got, err = readLimited(x, fuzzLimit)
		}
		if (err == nil) != (werr == nil) {
			t.Fatalf("error %v; compress/gzip: %v", err, werr)
		}
		// On errors the outputs may stop at different points (compress/flate
		// wants as many bits as the end-of-block code has before decoding a
		// symbol, so it stops earlier in truncated input), but agree.
		if n := min(len(got), len(want)); (err == nil && !bytes.Equal(got, want)) || !bytes.Equal(got[:n], want[:n]) {
			t.Fatalf("output %d bytes differs from compress/gzip's %d (errors %v, %v)", len(got), len(want), err, werr)
		}
		if err != nil && !errors.Is(err, ErrFormat) && !errors.Is(err, ErrChecksum) && !errors.Is(err, io.ErrUnexpectedEOF) {
			t.Fatalf("error %v wraps no sentinel", err)
		}
		if err != nil || len(got) == fuzzLimit {
			return
		}
		cps := x.Checkpoints()
		for i := 0; i < len(cps); i += max(len(cps)/3, 1) { // a few: each decodes the rest
			cp := cps[i]
			start := cp.In - int64(min(cp.Bits, 1))
			r, err := Resume(bytes.NewReader(blob[start:]), cp)
			if err != nil {
				t.Fatalf("checkpoint %d: %v", i, err)
			}
			rest, err := io.ReadAll(r)
			if err != nil || !bytes.Equal(rest, want[cp.Out:]) {
				t.Fatalf("checkpoint %d (in %d bits %d out %d): %d bytes, %v", i, cp.In, cp.Bits, cp.Out, len(rest), err)
			}
		}
	})
}

// FuzzResume: resuming from any checkpoint over any bytes fails cleanly or
// decodes, without panics and within bounded output.
func FuzzResume(f *testing.F) {
	blob := stdGzip(f, testData(70_000, 10), 6)
	x, err := NewIndexer(bytes.NewReader(blob), 10_000)
	if err != nil {
		f.Fatal(err)
	}
	if _, err := io.ReadAll(x); err != nil {
		f.Fatal(err)
	}
	for _, cp := range x.Checkpoints() {
		start := cp.In - int64(min(cp.Bits, 1))
		f.Add(blob[start:min(start+3000, int64(len(blob)))], cp.Bits, cp.Window[WindowSize-300:])
	}
	// from a checkpoint early in a stream whose rest is several output areas
	wrap := wrapSeeds(f)[0]
	x, err = NewIndexer(bytes.NewReader(wrap), 64<<10)
	if err != nil {
		f.Fatal(err)
	}
	if _, err := io.ReadAll(x); err != nil {
		f.Fatal(err)
	}
	cp := x.Checkpoints()[1]
	f.Add(wrap[cp.In-int64(min(cp.Bits, 1)):], cp.Bits, cp.Window)
	f.Add([]byte{0x01, 0x00, 0x00, 0xff, 0xff}, uint8(0), []byte(nil))
	f.Add([]byte{0xff, 0x02}, uint8(9), []byte("x"))
	f.Fuzz(func(t *testing.T, data []byte, bits uint8, window []byte) {
		cp := Checkpoint{In: 100, Bits: bits, Out: 1000, Window: window}
		r, err := Resume(bytes.NewReader(data), cp)
		if err != nil {
			if !errors.Is(err, ErrFormat) && !errors.Is(err, io.ErrUnexpectedEOF) {
				t.Fatalf("error %v wraps no sentinel", err)
			}
			return
		}
		if _, err := readLimited(r, fuzzLimit); err != nil &&
			!errors.Is(err, ErrFormat) && !errors.Is(err, ErrChecksum) && !errors.Is(err, io.ErrUnexpectedEOF) {
			t.Fatalf("error %v wraps no sentinel", err)
		}
	})
}
