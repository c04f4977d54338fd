package zran

import "encoding/binary"

// matchSlack is room after a match for copies in 16-byte steps.
const matchSlack = 16

// huffman decodes the symbols of a Huffman-coded block until its end, or
// until the output area is full (errFull).
//
// After a refill bb holds at least 56 bits: enough for a literal/length code
// with its extra bits (15+5) and a distance code with its extra bits (15+13),
// or for up to three literals (15 each). An iteration refills at most three
// times (at the top, before a distance, after a match), 7 bytes each plus an
// 8-byte load, so the fast path runs while 24 input bytes are buffered; the
// last ones of the stream go through huffSlow. Shift counts are masked with
// 63 so that the compiler emits plain shifts.
func (d *decoder) huffman() error {
	bb, nb, ip := d.bb, d.nb, d.ip
	in, out, w := d.in, d.buf, d.w
	lt, dt := d.lt, d.dt
	lo := d.lo
	// a check that w <= wmax is followed by at most one literal before a
	// match (the second literal of a run goes back to the top), and a match
	// writes up to matchSlack bytes past its end
	wmax := len(out) - 1 - maxMatch - matchSlack
	var e uint32
	for {
		if ip+24 > len(in) {
			// near the end of the buffered input: read more, or at the
			// end of input decode carefully
			d.bb, d.nb, d.ip, d.w = bb, nb, ip, w
			if !d.readMore() {
				if end, err := d.huffSlow(); end || err != nil {
					return err
				}
			}
			bb, nb, ip, in, w = d.bb, d.nb, d.ip, d.in, d.w
			continue
		}
		bb |= binary.LittleEndian.Uint64(in[ip:]) << (nb & 63)
		ip += int((63 - nb) >> 3)
		nb |= 56
		if w > wmax {
			d.bb, d.nb, d.ip, d.w = bb, nb, ip, w
			return errFull
		}
		e = lt[bb&(1<<litBits-1)]
	haveEntry: // e is the primary entry of the next code, bb has >= 56 bits
		if e&kindSub != 0 {
			bb >>= litBits
			nb -= litBits
			e = lt[(e>>16+uint32(bb)&(1<<(e>>8&15)-1))&(tableSize-1)]
		}
		if e&kindLit != 0 {
			// up to two more literals without a refill (>= 41 bits left)
			n := e & 63
			bb >>= n
			nb -= uint(n)
			out[w] = byte(e >> 16)
			w++
			e = lt[bb&(1<<litBits-1)]
			if e&kindSub != 0 {
				bb >>= litBits
				nb -= litBits
				e = lt[(e>>16+uint32(bb)&(1<<(e>>8&15)-1))&(tableSize-1)]
			}
			if e&kindLit == 0 {
				goto notLiteral // with >= 26 bits: enough for a length code and its extra bits
			}
			n = e & 63
			bb >>= n
			nb -= uint(n)
			out[w] = byte(e >> 16)
			w++
			e = lt[bb&(1<<litBits-1)]
			if e&(kindSub|kindLit) != kindLit {
				continue // >= 26 bits left, but not necessarily a subtable code and a match: refill
			}
			n = e & 63
			bb >>= n
			nb -= uint(n)
			out[w] = byte(e >> 16)
			w++
			continue
		}
	notLiteral:
		if e&(kindEOB|kindBad) != 0 {
			if e&kindBad != 0 {
				d.bb, d.nb, d.ip, d.w = bb, nb, ip, w
				return d.corrupt("invalid literal/length code")
			}
			n := e & 63
			bb >>= n
			nb -= uint(n)
			d.bb, d.nb, d.ip, d.w = bb, nb, ip, w
			d.state = stBlock
			return nil
		}
		t := e & 63
		length := int(e>>16) + int((uint32(bb)&(1<<t-1))>>(e>>8&15))
		bb >>= t
		nb -= uint(t)
		if nb < 28 {
			// only after literals; the refill above left >= 17 bytes
			bb |= binary.LittleEndian.Uint64(in[ip:]) << (nb & 63)
			ip += int((63 - nb) >> 3)
			nb |= 56
		}

		e = dt[bb&(1<<distBits-1)]
		if e&kindSub != 0 {
			bb >>= distBits
			nb -= distBits
			e = dt[(e>>16+uint32(bb)&(1<<(e>>8&15)-1))&(tableSize-1)]
		}
		if e&kindBad != 0 {
			d.bb, d.nb, d.ip, d.w = bb, nb, ip, w
			return d.corrupt("invalid distance code")
		}
		t = e & 63
		dist := int(e>>16) + int((uint32(bb)&(1<<t-1))>>(e>>8&15))
		bb >>= t
		nb -= uint(t)
		if dist > w-lo {
			d.bb, d.nb, d.ip, d.w = bb, nb, ip, w
			return d.corrupt("distance %d too far back", dist)
		}
		// refill (>= 10 bytes are left) and look up the next code before
		// copying, so that the load overlaps the copy
		bb |= binary.LittleEndian.Uint64(in[ip:]) << (nb & 63)
		ip += int((63 - nb) >> 3)
		nb |= 56
		e = lt[bb&(1<<litBits-1)]
		src := w - dist
		switch {
		case dist >= 8 && w+length+matchSlack <= len(out): // always so, given wmax
			// 8-byte words, each reading bytes at least 8 back, already
			// written; up to matchSlack bytes past the match are scratch
			dst := out[w : w+length+matchSlack]
			from := out[src:][:len(dst)]
			if dist >= 16 {
				for len(dst) > matchSlack && len(from) > matchSlack {
					binary.LittleEndian.PutUint64(dst, binary.LittleEndian.Uint64(from))
					binary.LittleEndian.PutUint64(dst[8:], binary.LittleEndian.Uint64(from[8:]))
					dst, from = dst[16:], from[16:]
				}
			} else {
				for len(dst) > matchSlack && len(from) > matchSlack {
					binary.LittleEndian.PutUint64(dst, binary.LittleEndian.Uint64(from))
					dst, from = dst[8:], from[8:]
				}
			}
		case dist == 1:
			b := out[src]
			for i := w; i < w+length; i++ {
				out[i] = b
			}
		default:
			end := w + length
			for x := w; x < end; {
				x += copy(out[x:end], out[src:x])
			}
		}
		w += length
		if ip+24 <= len(in) && w <= wmax {
			goto haveEntry
		}
	}
}

// huffSlow decodes one symbol at the end of the input, where the fast loop
// could read past it; it emits nothing decoded from bits past the end. It
// returns true at the end of the block.
func (d *decoder) huffSlow() (end bool, err error) {
	if err := d.refillSlow(); err != nil {
		return false, err
	}
	if d.w > len(d.buf)-maxMatch-matchSlack {
		return false, errFull
	}
	// >= 57 bits: a length code with extra bits and a distance code with
	// extra bits take at most 48
	e := d.lookup(d.lt, litBits)
	if e&kindBad != 0 {
		return false, d.corrupt("invalid literal/length code")
	}
	v := d.take(uint(e & 63))
	if d.truncated() {
		return false, d.eofErr()
	}
	switch {
	case e&kindLit != 0:
		d.buf[d.w] = byte(e >> 16)
		d.w++
		return false, nil
	case e&kindEOB != 0:
		d.state = stBlock
		return true, nil
	}
	length := int(e>>16) + int(v>>(e>>8&15))
	e = d.lookup(d.dt, distBits)
	if e&kindBad != 0 {
		return false, d.corrupt("invalid distance code")
	}
	v = d.take(uint(e & 63))
	if d.truncated() {
		return false, d.eofErr()
	}
	dist := int(e>>16) + int(v>>(e>>8&15))
	if dist > d.w-d.lo {
		return false, d.corrupt("distance %d too far back", dist)
	}
	for i := range length {
		d.buf[d.w+i] = d.buf[d.w-dist+i]
	}
	d.w += length
	return false, nil
}

// lookup returns the entry of the next code in t, consuming the primary
// bits if the code continues in a subtable.
func (d *decoder) lookup(t *table, bits uint) uint32 {
	e := t[d.bb&(1<<bits-1)]
	if e&kindSub != 0 {
		d.take(bits)
		e = t[(e>>16+uint32(d.bb)&(1<<(e>>8&15)-1))&(tableSize-1)]
	}
	return e
}
