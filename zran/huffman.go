package zran

import (
	"math/bits"
	"slices"
)

// Huffman decoding tables. A table is indexed by the next tableBits bits of
// input (deflate codes are packed starting with their first bit in the least
// significant position, so a table index is the bit-reversed code). Codes
// longer than tableBits continue in a subtable that the primary entry points
// to. Each entry is a uint32:
//
//	bits  0..7   total bits to consume: code length + extra bits
//	bits  8..11  code length (in a subtable: the length beyond the primary bits;
//	             in a subtable pointer: the subtable's index bits)
//	bits 12..15  kind flags (none: a length or distance with extra bits)
//	bits 16..31  value: literal byte, length or distance base, subtable start
const (
	kindLit = 1 << 12 // a literal byte
	kindEOB = 1 << 13 // end of block
	kindSub = 1 << 14 // pointer to a subtable
	kindBad = 1 << 15 // no code here (incomplete code) or an invalid symbol

	litBits  = 10 // primary index bits of the literal/length table
	distBits = 8  // of the distance table
	preBits  = 7  // of the code length code table (its codes are at most 7 bits)

	maxCodeLen = 15

	// tableSize holds any table: a primary table and its subtables take at
	// most 1332 entries for literal/length codes with 10 primary bits (zlib's
	// "enough 286 10 15") and fewer for distance and code length codes. A
	// power of two, so that masked indexes need no bounds checks.
	tableSize = 2048
)

// table is a decoding table; see buildTable.
type table [tableSize]uint32

// Base values and extra bits of length symbols 257..285 and distance symbols
// 0..29 (RFC 1951, 3.2.5).
var (
	lengthBase  = [29]uint16{3, 4, 5, 6, 7, 8, 9, 10, 11, 13, 15, 17, 19, 23, 27, 31, 35, 43, 51, 59, 67, 83, 99, 115, 131, 163, 195, 227, 258}
	lengthExtra = [29]uint8{0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3, 4, 4, 4, 4, 5, 5, 5, 5, 0}
	distBase    = [30]uint16{1, 2, 3, 4, 5, 7, 9, 13, 17, 25, 33, 49, 65, 97, 129, 193, 257, 385, 513, 769, 1025, 1537, 2049, 3073, 4097, 6145, 8193, 12289, 16385, 24577}
	distExtra   = [30]uint8{0, 0, 0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7, 8, 8, 9, 9, 10, 10, 11, 11, 12, 12, 13, 13}
)

// litEntry is the table entry (without code length) of literal/length symbol s.
func litEntry(s int) uint32 {
	switch {
	case s < 256:
		return kindLit | uint32(s)<<16
	case s == 256:
		return kindEOB
	case s < 286:
		s -= 257
		return uint32(lengthBase[s])<<16 | uint32(lengthExtra[s])
	}
	return kindBad
}

// distEntry is the table entry (without code length) of distance symbol s.
func distEntry(s int) uint32 {
	if s < 30 {
		return uint32(distBase[s])<<16 | uint32(distExtra[s])
	}
	return kindBad
}

// preEntry is the table entry of code length code symbol s (its value).
func preEntry(s int) uint32 { return uint32(s) << 16 }

// buildTable fills *tab with the decoding table of the canonical Huffman code
// with the given code lengths (at most maxCodeLen) and returns false if the
// lengths do not form a valid code. Valid, as compress/flate and zlib decide:
// complete (Kraft sum exactly 1), a single code of length 1, or no codes at
// all (then every entry is kindBad, and using the table is an error).
func buildTable(tab *table, lengths []uint8, bits uint, entry func(int) uint32) bool {
	var count [maxCodeLen + 1]int
	maxLen := 0
	for _, n := range lengths {
		count[n]++
		maxLen = max(maxLen, int(n))
	}
	count[0] = 0 // unused symbols
	// next[n] is the first canonical code of length n (RFC 1951, 3.2.2)
	var next [maxCodeLen + 1]int
	code := 0
	for n := 1; n <= maxCodeLen; n++ {
		code = (code + count[n-1]) << 1
		next[n] = code
	}
	// Kraft sum, in units of codes of length maxLen
	sum := 0
	for n := 1; n <= maxLen; n++ {
		sum += count[n] << (maxLen - n)
	}
	if maxLen > 0 && sum != 1<<maxLen && !(sum == 1 && maxLen == 1) {
		return false
	}

	size := 1 << bits
	t := grow(tab[:0], size)
	if maxLen == 0 {
		return true
	}
	// Subtables: for each primary index reached by codes longer than bits,
	// a subtable indexed by the code's remaining bits, sized for the longest
	// such code.
	if maxLen > int(bits) {
		var subLen [1 << litBits]uint8 // litBits is the largest primary
		c := next
		for _, n := range lengths {
			if int(n) > int(bits) {
				r := reverse(c[n], n)
				c[n]++
				p := r & (size - 1)
				subLen[p] = max(subLen[p], n-uint8(bits))
			}
		}
		for p, sl := range subLen[:size] {
			if sl > 0 {
				t[p] = kindSub | uint32(len(t))<<16 | uint32(sl)<<8
				if len(t)+1<<sl > tableSize {
					return false // cannot happen for a valid code (see tableSize)
				}
				t = grow(t, 1<<sl)
			}
		}
	}
	for s, n := range lengths {
		if n == 0 {
			continue
		}
		r := reverse(next[n], n)
		next[n]++
		e := entry(s)
		if e&kindBad != 0 {
			e = kindBad // an invalid symbol consumes nothing: decoding stops there
		}
		if int(n) <= int(bits) {
			if e&kindBad == 0 {
				e = e&^0xff | uint32(n)<<8 | (uint32(n) + e&0xff)
			}
			for i := r; i < size; i += 1 << n {
				t[i] = e
			}
			continue
		}
		p := t[r&(size-1)]
		start := int(p >> 16)
		sl := (p >> 8) & 15
		rest := uint32(n) - uint32(bits)
		if e&kindBad == 0 {
			e = e&^0xff | rest<<8 | (rest + e&0xff)
		}
		for i := r >> bits; i < 1<<sl; i += 1 << rest {
			t[start+i] = e
		}
	}
	return true
}

// grow appends n kindBad entries to t.
func grow(t []uint32, n int) []uint32 {
	t = slices.Grow(t, n)
	for range n {
		t = append(t, kindBad)
	}
	return t
}

// reverse returns the low n (1..15) bits of c in reverse order.
func reverse(c int, n uint8) int {
	return int(bits.Reverse16(uint16(c)) >> (16 - n))
}

// fixedTables builds the tables of the fixed Huffman code (RFC 1951, 3.2.6).
func fixedTables(lt, dt *table) {
	var l [288]uint8
	for i := range l {
		switch {
		case i < 144:
			l[i] = 8
		case i < 256:
			l[i] = 9
		case i < 280:
			l[i] = 7
		default:
			l[i] = 8
		}
	}
	buildTable(lt, l[:], litBits, litEntry)
	var d [32]uint8
	for i := range d {
		d[i] = 5
	}
	buildTable(dt, d[:], distBits, distEntry)
}
