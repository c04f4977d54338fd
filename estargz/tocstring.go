package estargz

import (
	"unicode/utf16"
	"unicode/utf8"
)

// The string grammar of the TOC decoder (tocjson.go): JSON strings with
// their escapes, decoded as encoding/json decodes them.

// readString reads a JSON string into d.scratch, decoded as encoding/json
// decodes it: invalid UTF-8 and unpaired surrogates become U+FFFD.
func (d *tocDecoder) readString() error {
	if err := d.expect('"'); err != nil {
		return err
	}
	d.scratch = d.scratch[:0]
	high := false // a byte >= 0x80 was copied
	for {
		if !d.fill() {
			return d.unexpectedEnd()
		}
		start := d.pos
		for d.pos < d.end {
			c := d.buf[d.pos]
			if c == '"' || c == '\\' || c < 0x20 {
				break
			}
			if c >= 0x80 {
				high = true
			}
			d.pos++
		}
		d.scratch = append(d.scratch, d.buf[start:d.pos]...)
		if d.pos == d.end {
			continue
		}
		c := d.buf[d.pos]
		d.pos++
		switch {
		case c == '"':
			if high && !utf8.Valid(d.scratch) {
				d.scratch = replaceInvalidUTF8(d.scratch)
			}
			return nil
		case c < 0x20:
			d.pos--
			return d.errorf("control character %#x in string", c)
		}
		if err := d.escape(); err != nil {
			return err
		}
	}
}

// replaceInvalidUTF8 replaces each byte of b that is not part of a valid
// UTF-8 sequence with U+FFFD, as encoding/json does.
func replaceInvalidUTF8(b []byte) []byte {
	out := make([]byte, 0, len(b)+8)
	for len(b) > 0 {
		r, n := utf8.DecodeRune(b)
		if r == utf8.RuneError && n == 1 {
			out = utf8.AppendRune(out, utf8.RuneError)
		} else {
			out = append(out, b[:n]...)
		}
		b = b[n:]
	}
	return out
}

func (d *tocDecoder) escape() error {
	if !d.fill() {
		return d.unexpectedEnd()
	}
	c := d.buf[d.pos]
	d.pos++
	switch c {
	case '"', '\\', '/':
		d.scratch = append(d.scratch, c)
	case 'b':
		d.scratch = append(d.scratch, '\b')
	case 'f':
		d.scratch = append(d.scratch, '\f')
	case 'n':
		d.scratch = append(d.scratch, '\n')
	case 'r':
		d.scratch = append(d.scratch, '\r')
	case 't':
		d.scratch = append(d.scratch, '\t')
	case 'u':
		r, err := d.hex4()
		if err != nil {
			return err
		}
		if utf16.IsSurrogate(r) {
			r = d.lowSurrogate(r)
		}
		d.scratch = utf8.AppendRune(d.scratch, r)
	default:
		d.pos--
		return d.errorf("invalid escape %q in string", c)
	}
	return nil
}

// lowSurrogate completes the surrogate pair that r starts when a \u escape
// of its low half follows (consuming it), as encoding/json does; otherwise
// r stands alone and is U+FFFD.
func (d *tocDecoder) lowSurrogate(r rune) rune {
	if !d.fill() || d.buf[d.pos] != '\\' {
		return utf8.RuneError
	}
	// look ahead without consuming: "\uXXXX" may straddle a refill, so
	// copy what is needed to the front of the buffer first
	if d.end-d.pos < 6 {
		n := copy(d.buf, d.buf[d.pos:d.end])
		d.consumed += int64(d.pos)
		d.pos, d.end = 0, n
		for d.end < 6 && d.rerr == nil {
			m, err := d.r.Read(d.buf[d.end:])
			d.end += m
			if err != nil {
				d.rerr = err
			}
		}
	}
	if d.end-d.pos < 6 || d.buf[d.pos+1] != 'u' {
		return utf8.RuneError
	}
	r2, ok := parseHex4(d.buf[d.pos+2 : d.pos+6])
	if !ok {
		return utf8.RuneError
	}
	if dec := utf16.DecodeRune(r, r2); dec != utf8.RuneError {
		d.pos += 6
		return dec
	}
	return utf8.RuneError
}

func (d *tocDecoder) hex4() (rune, error) {
	var h [4]byte
	for i := range h {
		if !d.fill() {
			return 0, d.unexpectedEnd()
		}
		h[i] = d.buf[d.pos]
		d.pos++
	}
	r, ok := parseHex4(h[:])
	if !ok {
		return 0, d.errorf("invalid \\u escape %q", h[:])
	}
	return r, nil
}

func parseHex4(h []byte) (rune, bool) {
	var r rune
	for _, c := range h {
		switch {
		case '0' <= c && c <= '9':
			c -= '0'
		case 'a' <= c && c <= 'f':
			c -= 'a' - 10
		case 'A' <= c && c <= 'F':
			c -= 'A' - 10
		default:
			return 0, false
		}
		r = r<<4 | rune(c)
	}
	return r, true
}
