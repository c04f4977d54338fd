package estargz

import (
	"encoding/base64"
	"errors"
	"fmt"
	"github.com/lazysnap/lazysnap/layer"
	"io"
	"math/bits"
	"strings"
)

// The TOC JSON is decoded by hand, entry by entry, as it is decompressed:
// encoding/json would need the whole document in memory and a jsonEntry
// (with its strings) for every entry at once, about 850 bytes per entry at
// peak, and spends most of a large layer's mount time. The decoder accepts
// what encoding/json accepts into jsonTOC, with the same result (the
// differential fuzzer FuzzTOCJSON holds it to that), except that it is
// stricter where strictness is cheap: a key given twice in an object, a
// key that matches a field only when case is folded, and unknown values
// nested deeper than maxSkipDepth are errors (errStrict).

// errStrict marks what the decoder rejects but encoding/json accepts.
var errStrict = errors.New("stricter than encoding/json")

// maxSkipDepth caps the nesting of a value under an unknown key (which is
// skipped). No writer of the format nests anything; the cap keeps the
// skipper's stack bounded.
const maxSkipDepth = 64

// tocReadBuffer is the decoder's read size: large enough that refills are
// rare next to the work of decoding.
const tocReadBuffer = 64 << 10

type tocDecoder struct {
	r        io.Reader
	buf      []byte
	pos, end int
	consumed int64 // bytes of r before buf[0]
	rerr     error // the read error that ended the input
	scratch  []byte
	uname    string // last owner names decoded, reused: most entries repeat them
	gname    string
}

func newTOCDecoder(r io.Reader) *tocDecoder {
	return &tocDecoder{r: r, buf: make([]byte, tocReadBuffer)}
}

func (d *tocDecoder) errorf(format string, args ...any) error {
	return fmt.Errorf("%w: TOC JSON at byte %d: %s", ErrFormat, d.consumed+int64(d.pos), fmt.Sprintf(format, args...))
}

func (d *tocDecoder) strictf(format string, args ...any) error {
	return fmt.Errorf("%w: TOC JSON at byte %d: %s (%w)", ErrFormat, d.consumed+int64(d.pos), fmt.Sprintf(format, args...), errStrict)
}

// fill makes at least one unread byte available; false at the end of the
// input (or on a read error, kept in rerr).
func (d *tocDecoder) fill() bool {
	if d.pos < d.end {
		return true
	}
	if d.rerr != nil {
		return false
	}
	d.consumed += int64(d.end)
	d.pos, d.end = 0, 0
	for d.end == 0 && d.rerr == nil {
		n, err := d.r.Read(d.buf)
		d.end = n
		if err != nil {
			d.rerr = err
		}
	}
	return d.end > 0
}

func (d *tocDecoder) unexpectedEnd() error {
	if d.rerr != nil && d.rerr != io.EOF {
		return fmt.Errorf("%w: TOC JSON: reading: %w", ErrFormat, d.rerr)
	}
	return d.errorf("unexpected end of JSON")
}

// peek skips whitespace and returns the next byte without consuming it.
func (d *tocDecoder) peek() (byte, error) {
	for d.fill() {
		for d.pos < d.end {
			switch c := d.buf[d.pos]; c {
			case ' ', '\t', '\n', '\r':
				d.pos++
			default:
				return c, nil
			}
		}
	}
	return 0, d.unexpectedEnd()
}

func (d *tocDecoder) expect(want byte) error {
	c, err := d.peek()
	if err != nil {
		return err
	}
	if c != want {
		return d.errorf("invalid character %q, want %q", c, want)
	}
	d.pos++
	return nil
}

// literal consumes the literal word (true, false, null) whose first byte
// has been peeked.
func (d *tocDecoder) literal(word string) error {
	for i := 0; i < len(word); i++ {
		if !d.fill() {
			return d.unexpectedEnd()
		}
		if d.buf[d.pos] != word[i] {
			return d.errorf("invalid character %q in literal %s", d.buf[d.pos], word)
		}
		d.pos++
	}
	return nil
}

// null consumes a null if one comes next.
func (d *tocDecoder) null() (bool, error) {
	c, err := d.peek()
	if err != nil || c != 'n' {
		return false, err
	}
	return true, d.literal("null")
}

// more reads what follows a member of an object or array: true after a
// comma, false after the closing byte.
func (d *tocDecoder) more(closing byte) (bool, error) {
	c, err := d.peek()
	if err != nil {
		return false, err
	}
	d.pos++
	switch c {
	case ',':
		return true, nil
	case closing:
		return false, nil
	}
	d.pos--
	return false, d.errorf("invalid character %q after a member, want ',' or %q", c, closing)
}

// openObject consumes '{' and reports whether the object has a member.
func (d *tocDecoder) openObject() (bool, error) {
	if err := d.expect('{'); err != nil {
		return false, err
	}
	c, err := d.peek()
	if err != nil {
		return false, err
	}
	if c == '}' {
		d.pos++
		return false, nil
	}
	return true, nil
}

// key reads an object key and its colon; the key is in d.scratch, valid
// until the next string is read.
func (d *tocDecoder) key() ([]byte, error) {
	if err := d.readString(); err != nil {
		return nil, err
	}
	if err := d.expect(':'); err != nil {
		return nil, err
	}
	return d.scratch, nil
}

// stringValue reads a string or null ("") as a new string.
func (d *tocDecoder) stringValue() (string, error) {
	if isNull, err := d.null(); isNull || err != nil {
		return "", err
	}
	if err := d.readString(); err != nil {
		return "", err
	}
	return string(d.scratch), nil
}

// ownerName reads a user or group name, reusing *last when it repeats.
func (d *tocDecoder) ownerName(last *string) (string, error) {
	if isNull, err := d.null(); isNull || err != nil {
		return "", err
	}
	if err := d.readString(); err != nil {
		return "", err
	}
	if string(d.scratch) != *last {
		*last = string(d.scratch)
	}
	return *last, nil
}

// typeValue reads the type field, as the constant when it is one.
func (d *tocDecoder) typeValue() (string, error) {
	if isNull, err := d.null(); isNull || err != nil {
		return "", err
	}
	if err := d.readString(); err != nil {
		return "", err
	}
	switch string(d.scratch) {
	case layer.TypeReg:
		return layer.TypeReg, nil
	case layer.TypeDir:
		return layer.TypeDir, nil
	case TypeChunk:
		return TypeChunk, nil
	case layer.TypeSymlink:
		return layer.TypeSymlink, nil
	case layer.TypeHardlink:
		return layer.TypeHardlink, nil
	}
	return string(d.scratch), nil
}

// intValue reads an integer or null (0): what encoding/json accepts into
// an int64 (a number literal without fraction or exponent, in range).
func (d *tocDecoder) intValue() (int64, error) {
	c, err := d.peek()
	if err != nil {
		return 0, err
	}
	if c == 'n' {
		return 0, d.literal("null")
	}
	neg := c == '-'
	if neg {
		d.pos++
	}
	var u uint64
	digits := 0
	for d.fill() {
		c := d.buf[d.pos]
		if c < '0' || c > '9' {
			break
		}
		if digits == 1 && u == 0 {
			return 0, d.errorf("leading zero in number")
		}
		if u > (1<<63)/10 {
			return 0, d.errorf("number out of range")
		}
		u = u*10 + uint64(c-'0')
		if u > 1<<63 {
			return 0, d.errorf("number out of range")
		}
		digits++
		d.pos++
	}
	if digits == 0 {
		return 0, d.errorf("invalid number")
	}
	if d.fill() {
		if c := d.buf[d.pos]; c == '.' || c == 'e' || c == 'E' {
			return 0, d.errorf("number is not an integer")
		}
	}
	if neg {
		return -int64(u), nil // -(1<<63) wraps to itself, as it should
	}
	if u > 1<<63-1 {
		return 0, d.errorf("number out of range")
	}
	return int64(u), nil
}

// xattrsValue reads the xattrs object: names to base64 values.
func (d *tocDecoder) xattrsValue() (map[string][]byte, error) {
	if isNull, err := d.null(); isNull || err != nil {
		return nil, err
	}
	m := map[string][]byte{}
	has, err := d.openObject()
	for has && err == nil {
		var k []byte
		if k, err = d.key(); err != nil {
			break
		}
		if _, dup := m[string(k)]; dup {
			return nil, d.strictf("xattr %q given twice", k)
		}
		name := string(k)
		var v []byte
		if isNull, err := d.null(); err != nil {
			return nil, err
		} else if !isNull {
			if err := d.readString(); err != nil {
				return nil, err
			}
			v = make([]byte, base64.StdEncoding.DecodedLen(len(d.scratch)))
			n, err := base64.StdEncoding.Decode(v, d.scratch)
			if err != nil {
				return nil, d.errorf("xattr %q: %v", name, err)
			}
			v = v[:n]
		}
		m[name] = v
		has, err = d.more('}')
	}
	return m, err
}

// skipValue consumes any JSON value, checking its syntax.
func (d *tocDecoder) skipValue(depth int) error {
	if depth > maxSkipDepth {
		return d.strictf("value nested deeper than %d", maxSkipDepth)
	}
	c, err := d.peek()
	if err != nil {
		return err
	}
	switch {
	case c == '"':
		return d.readString()
	case c == 't':
		return d.literal("true")
	case c == 'f':
		return d.literal("false")
	case c == 'n':
		return d.literal("null")
	case c == '-' || ('0' <= c && c <= '9'):
		return d.skipNumber()
	case c == '[':
		d.pos++
		if c, err := d.peek(); err != nil {
			return err
		} else if c == ']' {
			d.pos++
			return nil
		}
		for more := true; more; {
			if err := d.skipValue(depth + 1); err != nil {
				return err
			}
			if more, err = d.more(']'); err != nil {
				return err
			}
		}
		return nil
	case c == '{':
		has, err := d.openObject()
		for has && err == nil {
			if _, err = d.key(); err == nil {
				if err = d.skipValue(depth + 1); err == nil {
					has, err = d.more('}')
				}
			}
		}
		return err
	}
	return d.errorf("invalid character %q looking for a value", c)
}

// skipNumber consumes a number literal, checking its grammar.
func (d *tocDecoder) skipNumber() error {
	digits := func() int {
		n := 0
		for d.fill() && '0' <= d.buf[d.pos] && d.buf[d.pos] <= '9' {
			d.pos++
			n++
		}
		return n
	}
	if d.fill() && d.buf[d.pos] == '-' {
		d.pos++
	}
	if !d.fill() {
		return d.unexpectedEnd()
	}
	if d.buf[d.pos] == '0' {
		d.pos++
	} else if digits() == 0 {
		return d.errorf("invalid number")
	}
	if d.fill() && d.buf[d.pos] == '.' {
		d.pos++
		if digits() == 0 {
			return d.errorf("invalid number")
		}
	}
	if d.fill() && (d.buf[d.pos] == 'e' || d.buf[d.pos] == 'E') {
		d.pos++
		if d.fill() && (d.buf[d.pos] == '+' || d.buf[d.pos] == '-') {
			d.pos++
		}
		if digits() == 0 {
			return d.errorf("invalid number")
		}
	}
	return nil
}

// Bits of entryKeys, for finding a key given twice.
const (
	keyName = 1 << iota
	keyType
	keySize
	keyModTime
	keyLinkName
	keyMode
	keyUID
	keyGID
	keyUname
	keyGname
	keyOffset
	keyInnerOffset
	keyDevMajor
	keyDevMinor
	keyXattrs
	keyDigest
	keyChunkOffset
	keyChunkSize
	keyChunkDigest
	keyEndOffset
)

// entryKeys are jsonEntry's keys, for the check that an unknown key is not
// one of them in another case (encoding/json would take it).
func entryKeys() []string {
	return []string{"name", "type", "size", "modtime", "linkName", "mode", "uid", "gid",
		"userName", "groupName", "offset", "innerOffset", "devMajor", "devMinor", "xattrs", "digest",
		"chunkOffset", "chunkSize", "chunkDigest", "endOffset"}
}

// unknownKey skips the value of a key jsonEntry (or jsonTOC, whose keys
// are known) does not have, as encoding/json does, unless the key folds to
// one of known.
func (d *tocDecoder) unknownKey(k []byte, known []string) error {
	for _, f := range known {
		if strings.EqualFold(string(k), f) {
			return d.strictf("key %q for %q", k, f)
		}
	}
	return d.skipValue(1)
}

// entry decodes one entry object into je (reset first).
func (d *tocDecoder) entry(je *jsonEntry) error {
	*je = jsonEntry{}
	var seen uint32
	has, err := d.openObject()
	for has && err == nil {
		var k []byte
		if k, err = d.key(); err != nil {
			return err
		}
		var bit uint32
		var i int64
		switch string(k) {
		case "name":
			bit = keyName
			je.Name, err = d.stringValue()
		case "type":
			bit = keyType
			je.Type, err = d.typeValue()
		case "size":
			bit = keySize
			je.Size, err = d.intValue()
		case "modtime":
			bit = keyModTime
			je.ModTime3339, err = d.stringValue()
		case "linkName":
			bit = keyLinkName
			je.LinkName, err = d.stringValue()
		case "mode":
			bit = keyMode
			je.Mode, err = d.intValue()
		case "uid":
			bit = keyUID
			i, err = d.intValue()
			je.UID = int(i)
		case "gid":
			bit = keyGID
			i, err = d.intValue()
			je.GID = int(i)
		case "userName":
			bit = keyUname
			je.Uname, err = d.ownerName(&d.uname)
		case "groupName":
			bit = keyGname
			je.Gname, err = d.ownerName(&d.gname)
		case "offset":
			bit = keyOffset
			je.Offset, err = d.intValue()
		case "innerOffset":
			bit = keyInnerOffset
			je.InnerOffset, err = d.intValue()
		case "devMajor":
			bit = keyDevMajor
			i, err = d.intValue()
			je.DevMajor = int(i)
		case "devMinor":
			bit = keyDevMinor
			i, err = d.intValue()
			je.DevMinor = int(i)
		case "xattrs":
			bit = keyXattrs
			je.Xattrs, err = d.xattrsValue()
		case "digest":
			bit = keyDigest
			je.Digest, err = d.stringValue()
		case "chunkOffset":
			bit = keyChunkOffset
			je.ChunkOffset, err = d.intValue()
		case "chunkSize":
			bit = keyChunkSize
			je.ChunkSize, err = d.intValue()
		case "chunkDigest":
			bit = keyChunkDigest
			je.ChunkDigest, err = d.stringValue()
		case "endOffset":
			bit = keyEndOffset
			je.EndOffset, err = d.intValue()
		default:
			err = d.unknownKey(k, entryKeys())
		}
		if err != nil {
			return err
		}
		if seen&bit != 0 {
			return d.strictf("key %q given twice", entryKeys()[bits.TrailingZeros32(bit)])
		}
		seen |= bit
		has, err = d.more('}')
	}
	return err
}

// decodeTOCJSON decodes the TOC document from r, calling fn with each
// entry in order (nil for a JSON null; fn must not keep it) and the
// offset in r of the byte after it, and returns
// the version. It reads r to its end: what follows the document may only
// be whitespace.
func decodeTOCJSON(r io.Reader, fn func(je *jsonEntry, off int64) error) (int, error) {
	d := newTOCDecoder(r)
	if isNull, err := d.null(); isNull || err != nil {
		if err == nil {
			err = d.errorf("TOC is null")
		}
		return 0, err
	}
	var (
		version                  int64
		seenVersion, seenEntries bool
		je                       jsonEntry
	)
	has, err := d.openObject()
	for has && err == nil {
		var k []byte
		if k, err = d.key(); err != nil {
			return 0, err
		}
		switch string(k) {
		case "version":
			if seenVersion {
				return 0, d.strictf("key %q given twice", "version")
			}
			seenVersion = true
			if version, err = d.intValue(); err != nil {
				return 0, err
			}
		case "entries":
			if seenEntries {
				return 0, d.strictf("key %q given twice", "entries")
			}
			seenEntries = true
			if err := d.entries(&je, fn); err != nil {
				return 0, err
			}
		default:
			if err := d.unknownKey(k, []string{"version", "entries"}); err != nil {
				return 0, err
			}
		}
		has, err = d.more('}')
	}
	if err != nil {
		return 0, err
	}
	if _, err := d.peek(); err == nil {
		return 0, d.errorf("invalid character %q after the TOC", d.buf[d.pos])
	} else if d.rerr != io.EOF {
		return 0, err
	}
	return int(version), nil
}

func (d *tocDecoder) entries(je *jsonEntry, fn func(*jsonEntry, int64) error) error {
	if isNull, err := d.null(); isNull || err != nil {
		return err
	}
	if err := d.expect('['); err != nil {
		return err
	}
	if c, err := d.peek(); err != nil {
		return err
	} else if c == ']' {
		d.pos++
		return nil
	}
	for more := true; more; {
		isNull, err := d.null()
		if err != nil {
			return err
		}
		if isNull {
			err = fn(nil, d.consumed+int64(d.pos))
		} else if err = d.entry(je); err == nil {
			err = fn(je, d.consumed+int64(d.pos))
		}
		if err != nil {
			return err
		}
		if more, err = d.more(']'); err != nil {
			return err
		}
	}
	return nil
}
