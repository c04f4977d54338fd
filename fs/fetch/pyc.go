package fetch

import (
	"encoding/binary"
	"errors"
	"strings"
)

// A compiled Python module (.pyc) says which modules importing it imports
// next: its module code object's IMPORT_NAME instructions name them, and
// IMPORT_FROM the names taken from them, which may be submodules.
// pycImports reads those names from the marshal format of CPython 3.8 to
// 3.12 (the versions whose IMPORT_NAME and IMPORT_FROM opcodes are 108 and
// 109); the module body's only, not those of its functions, which run
// later if ever.

// pyImport is one import of a module's body: the module named (dotted,
// relative to the importing package when level > 0 or unknown), and the
// names taken from it.
type pyImport struct {
	name string
	from []string
}

var errPyc = errors.New("fetch: not a pyc file this reader knows")

// CPython's bytecode magic numbers (the first two bytes of a .pyc, little
// endian): 3.8 begins at 3400, 3.11 at 3450 (its code objects lose
// co_nlocals), 3.13 at 3550 (new opcode numbers).
const (
	pycMagic38  = 3400
	pycMagic311 = 3450
	pycMagic313 = 3550
)

// bytecode of 3.8-3.12
const (
	opImportName  = 108
	opImportFrom  = 109
	opExtendedArg = 144
)

// marshal type codes
const (
	mFlagRef = 0x80
)

// marshal reads CPython's marshal format, keeping the strings it has read
// for back references.
type marshal struct {
	b    []byte
	pos  int
	refs []any // per FLAG_REF object: its string, or nil
	py   int   // magic number
	top  bool  // the next code object is the module's
	imps []pyImport
}

func (m *marshal) need(n int) ([]byte, error) {
	if n < 0 || m.pos+n > len(m.b) {
		return nil, errPyc
	}
	p := m.b[m.pos : m.pos+n]
	m.pos += n
	return p, nil
}

func (m *marshal) u8() (int, error) {
	p, err := m.need(1)
	if err != nil {
		return 0, err
	}
	return int(p[0]), nil
}

func (m *marshal) i32() (int, error) {
	p, err := m.need(4)
	if err != nil {
		return 0, err
	}
	return int(int32(binary.LittleEndian.Uint32(p))), nil
}

// maxMarshalDepth bounds nesting (CPython's is 2000; a module's code is
// far shallower).
const maxMarshalDepth = 200

// object reads one object and returns it if it is a string, a bytes
// object or a tuple (as []any); other objects are skipped (nil).
func (m *marshal) object(depth int) (any, error) {
	if depth > maxMarshalDepth {
		return nil, errPyc
	}
	code, err := m.u8()
	if err != nil {
		return nil, err
	}
	ref := -1
	if code&mFlagRef != 0 {
		ref = len(m.refs)
		m.refs = append(m.refs, nil)
	}
	v, err := m.value(byte(code&^mFlagRef), depth)
	if err != nil {
		return nil, err
	}
	if ref >= 0 {
		m.refs[ref] = v
	}
	return v, nil
}

func (m *marshal) str(n int, err error) (any, error) {
	if err != nil {
		return nil, err
	}
	p, err := m.need(n)
	if err != nil {
		return nil, err
	}
	return string(p), nil
}

func (m *marshal) value(code byte, depth int) (any, error) {
	switch code {
	case '0', 'N', 'F', 'T', 'S', '.':
		return nil, nil
	case 'i':
		_, err := m.need(4)
		return nil, err
	case 'I', 'g':
		_, err := m.need(8)
		return nil, err
	case 'y':
		_, err := m.need(16)
		return nil, err
	case 'f':
		n, err := m.u8()
		if err == nil {
			_, err = m.need(n)
		}
		return nil, err
	case 'x':
		for range 2 {
			n, err := m.u8()
			if err == nil {
				_, err = m.need(n)
			}
			if err != nil {
				return nil, err
			}
		}
		return nil, nil
	case 'l':
		n, err := m.i32()
		if err == nil {
			if n < 0 {
				n = -n
			}
			_, err = m.need(2 * n)
		}
		return nil, err
	case 's', 't', 'u', 'a', 'A':
		return m.str(m.i32())
	case 'z', 'Z':
		return m.str(m.u8())
	case 'r':
		i, err := m.i32()
		if err != nil || i < 0 || i >= len(m.refs) {
			return nil, errPyc
		}
		return m.refs[i], nil
	case '(', '[', '<', '>':
		n, err := m.i32()
		if err != nil {
			return nil, err
		}
		return m.items(n, depth)
	case ')':
		n, err := m.u8()
		if err != nil {
			return nil, err
		}
		return m.items(n, depth)
	case '{':
		for {
			if m.pos < len(m.b) && m.b[m.pos] == '0' {
				m.pos++
				return nil, nil
			}
			for range 2 {
				if _, err := m.object(depth + 1); err != nil {
					return nil, err
				}
			}
		}
	case 'c':
		return nil, m.code(depth)
	}
	return nil, errPyc
}

func (m *marshal) items(n, depth int) ([]any, error) {
	if n < 0 || n > len(m.b)-m.pos {
		return nil, errPyc
	}
	out := make([]any, n)
	for i := range out {
		v, err := m.object(depth + 1)
		if err != nil {
			return nil, err
		}
		out[i] = v
	}
	return out, nil
}

// code reads a code object; for the module's (the first), it records the
// imports of its bytecode.
func (m *marshal) code(depth int) error {
	top := m.top
	m.top = false
	longs := 5 // argcount, posonlyargcount, kwonlyargcount, stacksize, flags
	if m.py < pycMagic311 {
		longs = 6 // and nlocals
	}
	if _, err := m.need(4 * longs); err != nil {
		return err
	}
	bc, err := m.object(depth + 1)
	if err != nil {
		return err
	}
	if _, err := m.object(depth + 1); err != nil { // consts
		return err
	}
	names, err := m.object(depth + 1)
	if err != nil {
		return err
	}
	rest := 7 // 3.11+: localsplusnames, localspluskinds, filename, name, qualname, (firstlineno), linetable, exceptiontable
	if m.py < pycMagic311 {
		rest = 6 // varnames, freevars, cellvars, filename, name, (firstlineno), lnotab
	}
	for i := range rest {
		if i == 5 {
			if _, err := m.need(4); err != nil { // firstlineno
				return err
			}
		}
		if _, err := m.object(depth + 1); err != nil {
			return err
		}
	}
	if top {
		code, _ := bc.(string)
		ns, _ := names.([]any)
		m.imps = importsOf([]byte(code), ns)
	}
	return nil
}

// importsOf finds IMPORT_NAME and IMPORT_FROM in bytecode (2-byte units)
// with names as its co_names.
func importsOf(code []byte, names []any) []pyImport {
	var out []pyImport
	name := func(i int) (string, bool) {
		if i < 0 || i >= len(names) {
			return "", false
		}
		s, ok := names[i].(string)
		return s, ok
	}
	ext := 0
	for i := 0; i+1 < len(code); i += 2 {
		op, arg := code[i], ext|int(code[i+1])
		ext = 0
		switch op {
		case opExtendedArg:
			ext = arg << 8
		case opImportName:
			if s, ok := name(arg); ok {
				out = append(out, pyImport{name: s})
			}
		case opImportFrom:
			if s, ok := name(arg); ok && len(out) > 0 {
				out[len(out)-1].from = append(out[len(out)-1].from, s)
			}
		}
	}
	return out
}

// pycImports returns the imports of a .pyc file's module body.
func pycImports(b []byte) ([]pyImport, error) {
	if len(b) < 17 || b[2] != '\r' || b[3] != '\n' {
		return nil, errPyc
	}
	magic := int(binary.LittleEndian.Uint16(b))
	if magic < pycMagic38 || magic >= pycMagic313 {
		return nil, errPyc
	}
	m := &marshal{b: b, pos: 16, py: magic, top: true}
	if _, err := m.object(0); err != nil {
		return nil, err
	}
	return m.imps, nil
}

// pycTag splits a cached module's file name (NAME.TAG.pyc, as in
// "client.cpython-311.pyc") into its module name and tag.
func pycTag(file string) (mod, tag string, ok bool) {
	base, found := strings.CutSuffix(file, ".pyc")
	if !found {
		return "", "", false
	}
	i := strings.LastIndexByte(base, '.')
	if i <= 0 {
		return "", "", false
	}
	return base[:i], base[i+1:], true
}
