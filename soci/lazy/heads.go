package lazy

import (
	"archive/tar"
	"bytes"
	"errors"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"

	"github.com/lazysnap/lazysnap/layer"
	"github.com/lazysnap/lazysnap/soci"
)

// entryHead is what a zTOC says of an entry that its tar header (the 512
// bytes before its content) must agree with: the span digests vouch for
// the blob's bytes, not for the zTOC's reading of them, so a zTOC that
// puts a file's name or size on bytes that are another's is caught when
// the span holding the header is inflated.
type entryHead struct {
	off  int64  // content offset in the tar stream; the header ends here
	end  int64  // where the content ends (the zTOC's size)
	size int64  // -1: not checked (a PAX size)
	typ  byte   // expected typeflag class: '0' regular, or the tar typeflag
	name string // "" when not checked (a PAX path or a long name)
}

func newEntryHead(f *soci.File) entryHead {
	h := entryHead{off: f.Offset, end: f.Offset + f.Size, size: f.Size}
	if _, ok := f.PAX["size"]; ok {
		h.size = -1
	}
	if _, ok := f.PAX["path"]; !ok && len(f.Name) <= 100 {
		h.name = strings.TrimSuffix(strings.TrimPrefix(f.Name, "./"), "/")
	}
	h.typ = map[string]byte{layer.TypeReg: '0', layer.TypeDir: '5', layer.TypeSymlink: '2', layer.TypeHardlink: '1',
		layer.TypeChar: '3', layer.TypeBlock: '4', layer.TypeFifo: '6'}[f.Type]
	return h
}

// checkHeads checks the tar headers that lie wholly in data (the span
// starting at uncompressed offset base) against the zTOC's entries.
func checkHeads(heads []entryHead, data []byte, base int64) error {
	end := base + int64(len(data))
	i, _ := slices.BinarySearchFunc(heads, base+512, func(h entryHead, off int64) int {
		if h.off < off {
			return -1
		}
		if h.off > off {
			return 1
		}
		return 0
	})
	for ; i < len(heads) && heads[i].off <= end; i++ {
		e := heads[i]
		b := data[e.off-512-base : e.off-base]
		if err := checkHead(e, b); err != nil {
			return fmt.Errorf("the zTOC's entry %q at %d does not match the layer's tar header: %w", e.name, e.off, err)
		}
	}
	return nil
}

// checkHead compares one ustar header block with an entry.
func checkHead(e entryHead, b []byte) error {
	sum, err := octal(b[148:156])
	if err != nil {
		return fmt.Errorf("checksum field: %w", err)
	}
	var got int64
	for j, c := range b {
		if j >= 148 && j < 156 {
			c = ' '
		}
		got += int64(c)
	}
	if got != sum {
		return fmt.Errorf("no tar header there (checksum %d, header says %d)", got, sum)
	}
	typ := b[156]
	if typ == 0 || typ == '7' {
		typ = '0'
	}
	if e.typ != 0 && typ != e.typ {
		return fmt.Errorf("type %q, the zTOC says %q", typ, e.typ)
	}
	if e.size >= 0 && (e.typ == '0') {
		if b[124]&0x80 == 0 { // octal; base-256 sizes are not checked
			n, err := octal(b[124:136])
			if err != nil || n != e.size {
				return fmt.Errorf("size %d (%v), the zTOC says %d", n, err, e.size)
			}
		}
	}
	if e.name != "" {
		name := cstr(b[0:100])
		if bytes.Equal(b[257:262], []byte("ustar")) {
			if p := cstr(b[345:500]); p != "" {
				name = p + "/" + name
			}
		}
		name = strings.TrimSuffix(strings.TrimPrefix(name, "./"), "/")
		if name != e.name && strings.TrimPrefix(name, "/") != e.name {
			return fmt.Errorf("name %q, the zTOC says %q", name, e.name)
		}
	}
	return nil
}

func cstr(b []byte) string {
	if i := bytes.IndexByte(b, 0); i >= 0 {
		b = b[:i]
	}
	return string(b)
}

func octal(b []byte) (int64, error) {
	s := strings.Trim(cstr(b), " ")
	if s == "" {
		return 0, nil
	}
	return strconv.ParseInt(s, 8, 64)
}

// errZtocMismatch is a zTOC whose file list is not the layer's.
var errZtocMismatch = errors.New("soci/lazy: the zTOC does not list the layer's files")

// matches compares e with a tar entry whose content starts at off, as
// checkHead does with a raw header.
func (e entryHead) matches(h *tar.Header, off int64) error {
	name := strings.TrimSuffix(strings.TrimPrefix(h.Name, "./"), "/")
	switch {
	case off != e.off:
		return fmt.Errorf("%q at %d, the zTOC's %q at %d", name, off, e.name, e.off)
	case e.name != "" && name != e.name:
		return fmt.Errorf("%q at %d, the zTOC says %q", name, off, e.name)
	}
	typ := h.Typeflag
	if typ == tar.TypeRegA || typ == tar.TypeCont {
		typ = tar.TypeReg
	}
	if e.typ != 0 && typ != e.typ {
		return fmt.Errorf("%q: type %q, the zTOC says %q", name, typ, e.typ)
	}
	if e.typ == tar.TypeReg && e.size >= 0 && h.Size != e.size {
		return fmt.Errorf("%q: %d bytes, the zTOC says %d", name, h.Size, e.size)
	}
	return nil
}

// countingReader counts the bytes read through it: archive/tar reads a
// header's blocks and no further, so after Next it is the offset of the
// entry's content in the tar stream.
type countingReader struct {
	r io.Reader
	n int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}
