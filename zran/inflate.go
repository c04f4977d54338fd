package zran

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
)

const (
	inSize   = 128 << 10 // input buffer
	outSize  = 256 << 10 // output area after the window
	inKeep   = 8         // input bytes kept before ip on compaction, for unread
	maxMatch = 258
)

// decoder states
const (
	stHeader  = iota // before a gzip member header
	stBlock          // at a deflate block boundary
	stHuff           // inside a Huffman-coded block
	stStored         // inside a stored block
	stTrailer        // after a member's final block
)

// decoder is a streaming gzip/deflate decoder over a sliding buffer that
// keeps WindowSize bytes of history before the output.
type decoder struct {
	r    io.Reader
	rerr error // first error from r (io.EOF at its end)

	in     []byte // input; in[ip:] not yet loaded
	ip     int
	inBase int64 // compressed offset of in[0]
	over   int   // zero bytes loaded into bb past the end of input
	bb     uint64
	nb     uint // bits in bb

	buf     []byte // history and output
	w       int    // write index
	rd      int    // read index: buf[rd:w] not yet returned
	lo      int    // lowest index a back-reference may reach
	outBase int64  // uncompressed offset of buf[0]

	state      int
	final      bool
	storedLeft int
	lt, dt     *table // current tables
	fixLT      table
	fixDT      table
	dynLT      table
	dynDT      table
	pre        table
	lens       [286 + 30]uint8

	raw    bool   // current member started at a checkpoint: trailer unchecked
	crc    uint32 // CRC-32 of buf[member start:crcPos]
	size   uint32 // member length mod 2^32, up to crcPos
	crcPos int

	ix  *Indexer // records checkpoints at block boundaries, if not nil
	err error    // sticky: io.EOF at the end of the stream, or the failure
}

func newDecoder(r io.Reader) *decoder {
	d := &decoder{
		r:   r,
		in:  make([]byte, 0, inSize),
		buf: make([]byte, WindowSize+outSize),
		w:   WindowSize,
		rd:  WindowSize,
	}
	d.crcPos = d.w
	d.lo = d.w
	d.outBase = -WindowSize
	fixedTables(&d.fixLT, &d.fixDT)
	return d
}

// bitPos is the compressed position, in bits, of the next unconsumed bit.
func (d *decoder) bitPos() int64 {
	return (d.inBase+int64(d.ip)+int64(d.over))*8 - int64(d.nb)
}

func (d *decoder) corrupt(format string, a ...any) error {
	if d.truncated() {
		return d.eofErr() // the "corruption" was decoded from bits past the end
	}
	return fmt.Errorf("%w: %s at compressed offset %d", ErrFormat, fmt.Sprintf(format, a...), d.bitPos()/8)
}

// truncated reports whether bits past the end of the input were consumed.
func (d *decoder) truncated() bool { return d.over*8 > int(d.nb) }

// eofErr is the error for input that ended early.
func (d *decoder) eofErr() error {
	if d.rerr != nil && d.rerr != io.EOF {
		return d.rerr
	}
	return io.ErrUnexpectedEOF
}

// readMore reads more input after compacting the buffer; false at the end
// of input (d.rerr set).
func (d *decoder) readMore() bool {
	if d.rerr != nil {
		return false
	}
	if keep := max(d.ip-inKeep, 0); keep > 0 && len(d.in) > cap(d.in)/2 {
		n := copy(d.in[:cap(d.in)], d.in[keep:])
		d.in = d.in[:n]
		d.ip -= keep
		d.inBase += int64(keep)
	}
	for range 100 {
		n, err := d.r.Read(d.in[len(d.in):cap(d.in)])
		if n < 0 || n > cap(d.in)-len(d.in) {
			d.rerr = errors.New("zran: reader returned an invalid count")
			return false
		}
		d.in = d.in[:len(d.in)+n]
		if err != nil {
			d.rerr = err
		}
		if n > 0 {
			return true
		}
		if err != nil {
			return false
		}
	}
	d.rerr = io.ErrNoProgress
	return false
}

// refillSlow fills bb to at least 57 bits, with zero bytes past the end of
// input; it fails if bits past the end were already consumed.
func (d *decoder) refillSlow() error {
	if d.truncated() {
		return d.eofErr()
	}
	for d.nb <= 56 {
		if d.ip < len(d.in) {
			d.bb |= uint64(d.in[d.ip]) << d.nb
			d.ip++
			d.nb += 8
			continue
		}
		if !d.readMore() {
			d.over++
			d.nb += 8
		}
	}
	return nil
}

// need makes at least n (<= 57) bits available in bb.
func (d *decoder) need(n uint) error {
	if d.nb >= n {
		return nil
	}
	return d.refillSlow()
}

// take consumes and returns n bits (need(n) first).
func (d *decoder) take(n uint) uint32 {
	v := uint32(d.bb & (1<<n - 1))
	d.bb >>= n
	d.nb -= n
	return v
}

// unread returns the whole bytes left in bb to the input, dropping the bits
// of a partly consumed byte: the stream goes on byte-aligned.
func (d *decoder) unread() error {
	if d.truncated() {
		return d.eofErr()
	}
	k := int(d.nb / 8)
	v := min(d.over, k)
	d.over -= v
	d.ip -= k - v
	d.bb, d.nb = 0, 0
	return nil
}

// readByte reads one byte of byte-aligned input (after unread).
func (d *decoder) readByte() (byte, error) {
	if d.ip >= len(d.in) && !d.readMore() {
		return 0, d.eofErr()
	}
	b := d.in[d.ip]
	d.ip++
	return b, nil
}

// readFull fills b with byte-aligned input.
func (d *decoder) readFull(b []byte) error {
	for i := range b {
		c, err := d.readByte()
		if err != nil {
			return err
		}
		b[i] = c
	}
	return nil
}

// read returns decoded bytes, decoding more as needed.
func (d *decoder) read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	for d.rd == d.w {
		if d.err != nil {
			return 0, d.err
		}
		d.run()
	}
	n := copy(p, d.buf[d.rd:d.w])
	d.rd += n
	return n, nil
}

// run decodes until the output area is full, the stream ends or fails.
func (d *decoder) run() {
	if len(d.buf)-d.w < WindowSize {
		d.slide()
	}
	for d.err == nil {
		var err error
		switch d.state {
		case stHeader:
			err = d.header(false)
		case stBlock:
			err = d.blockHeader()
		case stHuff:
			if err = d.huffman(); err == errFull {
				return
			}
		case stStored:
			if err = d.stored(); err == errFull {
				return
			}
		case stTrailer:
			err = d.trailer()
		}
		if err != nil {
			d.checksum()
			d.err = err
		}
	}
}

// errFull suspends decoding when the output area is full.
var errFull = errors.New("output full")

// checksum adds the output since crcPos to the member's CRC-32 and size.
func (d *decoder) checksum() {
	if d.crcPos < d.w {
		d.crc = crc32.Update(d.crc, crc32.IEEETable, d.buf[d.crcPos:d.w])
		d.size += uint32(d.w - d.crcPos)
		d.crcPos = d.w
	}
}

// slide moves the last WindowSize bytes of output to the start of buf.
// Everything before w has been read.
func (d *decoder) slide() {
	d.checksum()
	s := d.w - WindowSize
	copy(d.buf, d.buf[s:d.w])
	d.w -= s
	d.rd -= s
	d.crcPos -= s
	d.lo = max(d.lo-s, 0)
	d.outBase += int64(s)
}

// blockHeader is at a block boundary: it records a checkpoint and starts
// the next block, or ends the member after its final block.
func (d *decoder) blockHeader() error {
	if d.truncated() {
		return d.eofErr()
	}
	if d.final {
		d.state = stTrailer
		return nil
	}
	if err := d.need(3); err != nil {
		return err
	}
	if d.ix != nil {
		d.ix.boundary(d)
	}
	h := d.take(3)
	d.final = h&1 != 0
	switch h >> 1 {
	case 0:
		if err := d.unread(); err != nil {
			return err
		}
		var b [4]byte
		if err := d.readFull(b[:]); err != nil {
			return err
		}
		n := binary.LittleEndian.Uint16(b[:])
		if n != ^binary.LittleEndian.Uint16(b[2:]) {
			return d.corrupt("stored block length check failed")
		}
		d.storedLeft = int(n)
		d.state = stStored
	case 1:
		d.lt, d.dt = &d.fixLT, &d.fixDT
		d.state = stHuff
	case 2:
		if err := d.dynamic(); err != nil {
			return err
		}
		d.lt, d.dt = &d.dynLT, &d.dynDT
		d.state = stHuff
	default:
		return d.corrupt("invalid block type 3")
	}
	return nil
}

// stored copies a stored block's bytes.
func (d *decoder) stored() error {
	for d.storedLeft > 0 {
		if d.w == len(d.buf) {
			return errFull
		}
		if d.ip == len(d.in) && !d.readMore() {
			return d.eofErr()
		}
		n := min(d.storedLeft, len(d.buf)-d.w, len(d.in)-d.ip)
		copy(d.buf[d.w:], d.in[d.ip:d.ip+n])
		d.w += n
		d.ip += n
		d.storedLeft -= n
	}
	d.state = stBlock
	return nil
}

// codeOrder is the order of the code length code lengths (RFC 1951, 3.2.7).
var codeOrder = [19]uint8{16, 17, 18, 0, 8, 7, 9, 6, 10, 5, 11, 4, 12, 3, 13, 2, 14, 1, 15}

// dynamic reads the code lengths of a dynamic Huffman block and builds its
// tables, rejecting what compress/flate rejects.
func (d *decoder) dynamic() error {
	if err := d.need(14); err != nil {
		return err
	}
	nlit := int(d.take(5)) + 257
	ndist := int(d.take(5)) + 1
	nclen := int(d.take(4)) + 4
	if nlit > 286 || ndist > 30 {
		return d.corrupt("too many length or distance symbols")
	}
	var cl [19]uint8
	for i := range nclen {
		if err := d.need(3); err != nil {
			return err
		}
		cl[codeOrder[i]] = uint8(d.take(3))
	}
	if !buildTable(&d.pre, cl[:], preBits, preEntry) {
		return d.corrupt("invalid code length code")
	}
	lens := d.lens[:nlit+ndist]
	for i := 0; i < len(lens); {
		if err := d.need(preBits + 7); err != nil {
			return err
		}
		e := d.pre[d.bb&(1<<preBits-1)]
		if e&kindBad != 0 {
			return d.corrupt("invalid code length code")
		}
		d.take(uint(e & 0xff))
		sym := e >> 16
		if sym < 16 {
			lens[i] = uint8(sym)
			i++
			continue
		}
		var rep int
		var v uint8
		switch sym {
		case 16:
			if i == 0 {
				return d.corrupt("repeat of no previous code length")
			}
			rep, v = 3+int(d.take(2)), lens[i-1]
		case 17:
			rep = 3 + int(d.take(3))
		default:
			rep = 11 + int(d.take(7))
		}
		if i+rep > len(lens) {
			return d.corrupt("code lengths overflow")
		}
		for range rep {
			lens[i] = v
			i++
		}
	}
	if !buildTable(&d.dynLT, lens[:nlit], litBits, litEntry) ||
		!buildTable(&d.dynDT, lens[nlit:], distBits, distEntry) {
		return d.corrupt("invalid Huffman code")
	}
	return nil
}
