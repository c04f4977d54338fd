package zran

import "encoding/binary"

// matchSlack is room after a match for copies in 8-byte words.
const matchSlack = 8

// huffman decodes the symbols of a Huffman-coded block until its end, or
// until the output area is full (errFull).
func (d *decoder) huffman() error {
	bb, nb, ip := d.bb, d.nb, d.ip
	in, out, w := d.in, d.buf, d.w
	lt, dt := d.lt, d.dt
	lo := d.lo
	wmax := len(out) - maxMatch - matchSlack
	d.wSym = w
	for {
		if ip+8 <= len(in) {
			bb |= binary.LittleEndian.Uint64(in[ip:]) << nb
			ip += int((63 - nb) >> 3)
			nb |= 56
		} else {
			d.bb, d.nb, d.ip, d.w = bb, nb, ip, w
			if err := d.refillSlow(); err != nil {
				d.w = d.wSym // drop output decoded from bits past the end
				return err
			}
			d.wSym = w
			bb, nb, ip, in = d.bb, d.nb, d.ip, d.in
		}
		if w > wmax {
			d.bb, d.nb, d.ip, d.w = bb, nb, ip, w
			return errFull
		}
		e := lt[bb&(1<<litBits-1)]
		if e&kindSub != 0 {
			bb >>= litBits
			nb -= litBits
			e = lt[e>>16+uint32(bb)&(1<<(e>>8&15)-1)]
		}
		if e&kindLit != 0 {
			n := e & 0xff
			bb >>= n
			nb -= uint(n)
			out[w] = byte(e >> 16)
			w++
			continue
		}
		if e&(kindEOB|kindBad) != 0 {
			if e&kindBad != 0 {
				d.bb, d.nb, d.ip, d.w = bb, nb, ip, w
				return d.corrupt("invalid literal/length code")
			}
			n := e & 0xff
			bb >>= n
			nb -= uint(n)
			d.bb, d.nb, d.ip, d.w = bb, nb, ip, w
			d.state = stBlock
			return nil
		}
		t := e & 0xff
		length := int(e>>16) + int((uint32(bb)&(1<<t-1))>>(e>>8&15))
		bb >>= t
		nb -= uint(t)

		e = dt[bb&(1<<distBits-1)]
		if e&kindSub != 0 {
			bb >>= distBits
			nb -= distBits
			e = dt[e>>16+uint32(bb)&(1<<(e>>8&15)-1)]
		}
		if e&kindBad != 0 {
			d.bb, d.nb, d.ip, d.w = bb, nb, ip, w
			return d.corrupt("invalid distance code")
		}
		t = e & 0xff
		dist := int(e>>16) + int((uint32(bb)&(1<<t-1))>>(e>>8&15))
		bb >>= t
		nb -= uint(t)
		if dist > w-lo {
			d.bb, d.nb, d.ip, d.w = bb, nb, ip, w
			return d.corrupt("distance %d too far back", dist)
		}
		src := w - dist
		switch {
		case dist >= 8:
			// words: each reads bytes at least 8 back, already written
			for i := 0; i < length; i += 8 {
				binary.LittleEndian.PutUint64(out[w+i:], binary.LittleEndian.Uint64(out[src+i:]))
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
	}
}
