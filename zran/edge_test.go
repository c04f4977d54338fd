package zran

import (
	"bytes"
	stdgzip "compress/gzip"
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"io"
	"math/bits"
	"math/rand/v2"
	"testing"
)

// deflateWriter hand-builds a gzip member of stored and fixed-Huffman blocks
// (RFC 1951 3.2.4-3.2.6), with exactly the literals and matches asked for, and
// keeps the output they decode to.
type deflateWriter struct {
	b   []byte
	acc uint64
	n   uint
	out []byte
}

// put writes the n low bits of v, least significant first.
func (w *deflateWriter) put(v uint64, n uint) {
	w.acc |= v << w.n
	w.n += n
	for w.n >= 8 {
		w.b = append(w.b, byte(w.acc))
		w.acc >>= 8
		w.n -= 8
	}
}

// code writes an n-bit Huffman code, most significant bit first.
func (w *deflateWriter) code(c uint32, n uint) { w.put(uint64(bits.Reverse32(c)>>(32-n)), n) }

// sym writes a fixed-code literal/length symbol.
func (w *deflateWriter) sym(s int) {
	switch {
	case s < 144:
		w.code(uint32(0x30+s), 8)
	case s < 256:
		w.code(uint32(0x190+s-144), 9)
	case s < 280:
		w.code(uint32(s-256), 7)
	default:
		w.code(uint32(0xc0+s-280), 8)
	}
}

func (w *deflateWriter) stored(data []byte, final bool) {
	w.put(uint64(b2i(final)), 3) // BTYPE 00
	if w.n > 0 {
		w.put(0, 8-w.n)
	}
	w.b = binary.LittleEndian.AppendUint16(w.b, uint16(len(data)))
	w.b = binary.LittleEndian.AppendUint16(w.b, ^uint16(len(data)))
	w.b = append(w.b, data...)
	w.out = append(w.out, data...)
}

func (w *deflateWriter) fixed(final bool) { w.put(uint64(b2i(final))|1<<1, 3) }

func (w *deflateWriter) lit(c byte) {
	w.sym(int(c))
	w.out = append(w.out, c)
}

func (w *deflateWriter) endBlock() { w.sym(256) }

// match writes a back-reference of length 3..258 at distance 1..32768.
func (w *deflateWriter) match(length, dist int) {
	if length == 258 {
		w.sym(285)
	} else {
		base, extra := 3, uint(0)
		for s := 257; ; s++ {
			if s >= 265 {
				extra = uint(s-261) / 4
			}
			if length < base+1<<extra {
				w.sym(s)
				w.put(uint64(length-base), extra)
				break
			}
			base += 1 << extra
		}
	}
	base, extra := 1, uint(0)
	for c := uint32(0); ; c++ {
		if c >= 4 {
			extra = uint(c-2) / 2
		}
		if dist < base+1<<extra {
			w.code(c, 5)
			w.put(uint64(dist-base), extra)
			break
		}
		base += 1 << extra
	}
	from := len(w.out) - dist
	for n := length; n > 0; { // out[from:] repeats with period dist
		k := min(n, len(w.out)-from)
		w.out = append(w.out, w.out[from:from+k]...)
		n -= k
	}
}

// gzip returns the member: a plain header, the blocks, the trailer.
func (w *deflateWriter) gzip() []byte {
	if w.n > 0 {
		w.put(0, 8-w.n)
	}
	b := append([]byte{0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff}, w.b...)
	b = binary.LittleEndian.AppendUint32(b, crc32.ChecksumIEEE(w.out))
	return binary.LittleEndian.AppendUint32(b, uint32(len(w.out)))
}

func b2i(b bool) int {
	if b {
		return 1
	}
	return 0
}

// edgeCase is a run of units (lits literals, then a match of length at dist)
// to be put across the output buffer's edge.
type edgeCase struct {
	name         string
	lits, length int
	dist         int
}

func (c edgeCase) unit() int { return c.lits + c.length }

// begin starts a stream with dist+pre random bytes in a stored block, so that
// the first match has history.
func (c edgeCase) begin(rng *rand.Rand, pre int) *deflateWriter {
	w := &deflateWriter{out: make([]byte, 0, 2*outSize)}
	head := make([]byte, c.dist+pre)
	for i := range head {
		head[i] = byte(rng.Uint32())
	}
	w.stored(head, false)
	return w
}

func (c edgeCase) units(w *deflateWriter, rng *rand.Rand, n int) {
	for range n {
		for range c.lits {
			w.lit(byte(rng.Uint32()))
		}
		w.match(c.length, c.dist)
	}
}

// end writes a final block of units, about n bytes of output, and
// returns the gzip member and its output, checked with compress/gzip.
func (c edgeCase) end(t testing.TB, w *deflateWriter, rng *rand.Rand, n int) (blob, out []byte) {
	t.Helper()
	w.fixed(true)
	c.units(w, rng, n/c.unit())
	w.endBlock()
	blob = w.gzip()
	if err := sameOutput(w.out, func() (io.Reader, error) { return stdgzip.NewReader(bytes.NewReader(blob)) }); err != nil {
		t.Fatalf("compress/gzip: %v", err)
	}
	return blob, w.out
}

// sameOutput reads r to its end and compares it with want as it goes,
// turning a panic into an error so that one case's failure does not end the
// test binary.
func sameOutput(want []byte, r func() (io.Reader, error)) (err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("panic: %v", p)
		}
	}()
	rd, err := r()
	if err != nil {
		return err
	}
	buf := make([]byte, 64<<10)
	n := 0
	for {
		k, err := rd.Read(buf)
		if !bytes.Equal(buf[:k], want[n:min(n+k, len(want))]) {
			return fmt.Errorf("output differs in bytes %d to %d of %d", n, n+k, len(want))
		}
		n += k
		if err == io.EOF && n == len(want) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("after %d of %d bytes: %w", n, len(want), err)
		}
	}
}

// TestMatchAcrossBufferEdge (issue 21): long matches near the end of the
// decoder's output area, at every offset of the unit pattern relative to it,
// decode as compress/gzip decodes them, inflating the whole stream (the
// stream's start moves the pattern against the buffer) and resuming from
// every checkpoint (each checkpoint starts a fresh buffer one byte further
// along the pattern). The dist >= 8 copy writes matchSlack bytes past a
// match: a match after a literal at the end of the area once ran past it.
func TestMatchAcrossBufferEdge(t *testing.T) {
	cases := []edgeCase{
		{"lit+258/dist8", 1, 258, 8},
		{"lit+258/dist15", 1, 258, 15},
		{"lit+258/dist16", 1, 258, 16},
		{"lit+258/dist32768", 1, 258, 32768},
		{"lit+258/dist1", 1, 258, 1},
		{"lit+258/dist7", 1, 258, 7},
		{"258/dist300", 0, 258, 300},
		{"2lit+258/dist64", 2, 258, 64},
		{"lit+257/dist9", 1, 257, 9},
	}
	// past the edge of the first buffer fill, and by more input than the
	// decoder's fast loop keeps buffered (near the end of its input it
	// decodes symbol by symbol)
	area := outSize + 100*maxMatch
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			rng := rand.New(rand.NewPCG(uint64(c.dist), uint64(c.unit())))
			for pre := range c.unit() {
				w := c.begin(rng, pre)
				blob, want := c.end(t, w, rng, area)
				if err := sameOutput(want, func() (io.Reader, error) { return NewIndexer(bytes.NewReader(blob), 1<<40) }); err != nil {
					t.Fatalf("offset %d: %v", pre, err)
				}
			}

			// one block per unit, each with one more literal, so that the
			// checkpoints' offsets step through the pattern; then enough
			// units that each resumed decoder fills its output area
			w := c.begin(rng, 0)
			for range c.unit() {
				w.fixed(false)
				w.lit(byte(rng.Uint32()))
				c.units(w, rng, 1)
				w.endBlock()
			}
			blob, want := c.end(t, w, rng, area)
			x, err := NewIndexer(bytes.NewReader(blob), 0)
			if err != nil {
				t.Fatal(err)
			}
			if err := sameOutput(want, func() (io.Reader, error) { return x, nil }); err != nil {
				t.Fatalf("whole: %v", err)
			}
			cps := x.Checkpoints()
			if len(cps) < c.unit() {
				t.Fatalf("%d checkpoints, want at least %d", len(cps), c.unit())
			}
			for i, cp := range cps {
				start := cp.In - int64(min(cp.Bits, 1))
				if err := sameOutput(want[cp.Out:], func() (io.Reader, error) { return Resume(bytes.NewReader(blob[start:]), cp) }); err != nil {
					t.Fatalf("checkpoint %d (out %d): %v", i, cp.Out, err)
				}
			}
		})
	}
}
