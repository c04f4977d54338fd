package soci

import (
	"fmt"
	"unsafe"

	"github.com/lazysnap/lazysnap/layer"
	"github.com/lazysnap/lazysnap/soci/internal/fb"
	"github.com/opencontainers/go-digest"
)

// Decode memory. A FlatBuffers zTOC refers to its records (an entry's
// table, its strings, its PAX records, the span digests) by offset, so
// many entries could name one record and a small zTOC decode into
// gigabytes. Unmarshal refuses that (ErrAliased): every record it copies
// out must take bytes of the buffer no other record takes. What it
// allocates is then bounded by the buffer's size: at most DecodeRatio
// times the zTOC's bytes plus DecodeOverhead (DecodeBound). The worst case
// is a buffer of minimal entries: 36 bytes (a table reference, a table of
// a type and a PAX vector, the type string, one empty PAX record) become a
// File and a one-record map, 14 times as many (TestUnmarshalDense). A real
// zTOC (every string of every entry written out, as SOCI's writer does)
// decodes into at most about twice its size.
const (
	DecodeRatio    = 16
	DecodeOverhead = 64 << 10
)

// DecodeBound is the most Unmarshal allocates for a zTOC of n bytes.
func DecodeBound(n int) int64 { return DecodeRatio*int64(n) + DecodeOverhead }

// maxInflateRatio is deflate's largest expansion (a 258-byte match coded in
// 2 bits): a tar stream is at most this many times its gzip blob, plus the
// gzip members' own bytes.
const maxInflateRatio = 1032

// tarBlock is a tar header's size: every entry has one before its content.
const tarBlock = 512

// Limits bound what UnmarshalLimits accepts.
type Limits struct {
	// MaxFiles caps the entries (0: DefaultMaxFiles).
	MaxFiles int
	// Reserve, when set, is given the bytes the decoded zTOC will hold
	// (its entries, their strings and PAX maps, the span digests and
	// checkpoints; at most DecodeBound of the buffer), once the buffer has
	// been checked and before any entry is copied out of it. An error from
	// it fails the decode and is returned wrapped.
	Reserve func(n int64) error
}

// Unmarshal parses and validates a serialized zTOC. maxFiles caps its
// entries (0: DefaultMaxFiles). Errors wrap ErrFormat (ErrAliased among
// them), ErrInvalid, ErrTooLarge or ErrUnsupported.
func Unmarshal(b []byte, maxFiles int) (*Ztoc, error) {
	return UnmarshalLimits(b, Limits{MaxFiles: maxFiles})
}

// UnmarshalLimits is Unmarshal with the limits l.
func UnmarshalLimits(b []byte, l Limits) (z *Ztoc, err error) {
	if len(b) > MaxZtocSize {
		return nil, fmt.Errorf("%w: zTOC of %d bytes (at most %d)", ErrTooLarge, len(b), MaxZtocSize)
	}
	if len(b) < 8 {
		return nil, fmt.Errorf("%w: zTOC of %d bytes", ErrFormat, len(b))
	}
	if l.MaxFiles <= 0 {
		l.MaxFiles = DefaultMaxFiles
	}
	defer func() {
		// the FlatBuffers accessors index the buffer unchecked: an offset
		// out of it panics, which is a malformed zTOC
		if r := recover(); r != nil {
			z, err = nil, fmt.Errorf("%w: %v", ErrFormat, r)
		}
	}()
	d := &decoder{b: b[:len(b):len(b)], seen: make([]uint64, (len(b)+63)/64)}
	z, err = d.decode(l)
	if err != nil {
		return nil, err
	}
	if err := z.Validate(); err != nil {
		return nil, err
	}
	return z, nil
}

// vectorOK reports whether a vector of n elements of at least size bytes
// each can be in a buffer of len bytes (before anything is allocated for it).
func vectorOK(n, size, len int) bool { return n >= 0 && n <= len/size }

// decoder reads one zTOC in two passes over its entries: the first claims
// the bytes of every record that will be copied (refusing aliases) and
// adds up what the copies will take, the second allocates and copies.
type decoder struct {
	b    []byte   // the zTOC; its capacity is its length, so a slice of it tells where it starts
	seen []uint64 // a bit for each byte of b that a record has claimed
	need int64    // bytes the decoded zTOC will hold
}

// Sizes of what decoding allocates: a File, a Checkpoint, a string or
// digest header, a PAX map (Go's swiss tables: a group of 8 slots of 32
// bytes; about 75 bytes a record at the lowest load), a time zone.
const (
	fileBytes       = int64(unsafe.Sizeof(File{}))
	checkpointBytes = int64(unsafe.Sizeof(Checkpoint{}))
	stringBytes     = int64(unsafe.Sizeof(""))
	mapBytes        = 320
	mapRecordBytes  = 80
	zoneBytes       = 176 // the *time.Location of a time at an offset of minutes
)

// claim takes [pos, pos+n) of the buffer for one record, or fails with
// ErrAliased if another record took a byte of it.
func (d *decoder) claim(pos, n int, what string, i int) error {
	if pos < 0 || n < 0 || pos > len(d.b)-n {
		return fmt.Errorf("%w: %s %d at %d+%d, outside the zTOC's %d bytes", ErrFormat, what, i, pos, n, len(d.b))
	}
	for p, end := pos, pos+n; p < end; {
		w, lo := p>>6, p&63
		hi := min(end-w<<6, 64)
		mask := (^uint64(0) >> (64 - (hi - lo))) << lo
		if d.seen[w]&mask != 0 {
			return fmt.Errorf("%w: %s %d (bytes %d to %d of the zTOC) is another record's too", ErrAliased, what, i, pos, pos+n)
		}
		d.seen[w] |= mask
		p = (w + 1) << 6
	}
	return nil
}

// str claims the string s returned by an accessor (nil: absent): its
// length prefix and its bytes. It returns len(s).
func (d *decoder) str(s []byte, what string, i int) (int, error) {
	if s == nil {
		return 0, nil
	}
	start := len(d.b) - cap(s)
	return len(s), d.claim(start-4, 4+len(s), what, i)
}

// copied claims the string s, which is copied out, and adds the copy to
// need.
func (d *decoder) copied(s []byte, what string, i int) error {
	n, err := d.str(s, what, i)
	d.need += int64(n)
	return err
}

// fileType returns the layer.Type constant t names, without allocating ("" if
// none).
func fileType(t []byte) string {
	for _, k := range [...]string{layer.TypeDir, layer.TypeReg, layer.TypeSymlink, layer.TypeHardlink, layer.TypeChar, layer.TypeBlock, layer.TypeFifo} {
		if string(t) == k {
			return k
		}
	}
	return ""
}

func (d *decoder) decode(l Limits) (*Ztoc, error) {
	root := fb.GetRootAsZtoc(d.b, 0)
	version, tool := root.Version(), root.BuildToolIdentifier()
	if err := d.copied(version, "the version string", 0); err != nil {
		return nil, err
	}
	if err := d.copied(tool, "the build tool string", 0); err != nil {
		return nil, err
	}
	z := &Ztoc{CompressedSize: root.CompressedArchiveSize(), UncompressedSize: root.UncompressedArchiveSize()}
	if z.CompressedSize <= 0 || z.UncompressedSize < 0 || z.UncompressedSize/maxInflateRatio > z.CompressedSize {
		return nil, fmt.Errorf("%w: sizes %d compressed, %d uncompressed", ErrInvalid, z.CompressedSize, z.UncompressedSize)
	}
	toc := root.Toc(nil)
	if toc == nil {
		return nil, fmt.Errorf("%w: no TOC", ErrFormat)
	}
	n := toc.MetadataLength()
	if !vectorOK(n, 4, len(d.b)) {
		return nil, fmt.Errorf("%w: %d entries in %d bytes", ErrFormat, n, len(d.b))
	}
	if n > l.MaxFiles {
		return nil, fmt.Errorf("%w: %d entries (at most %d)", ErrTooLarge, n, l.MaxFiles)
	}
	if int64(n) > z.UncompressedSize/tarBlock {
		return nil, fmt.Errorf("%w: %d entries in a tar stream of %d bytes (each has a %d-byte header)", ErrInvalid, n, z.UncompressedSize, tarBlock)
	}
	ci := root.CompressionInfo(nil)
	if ci == nil {
		return nil, fmt.Errorf("%w: no compression info", ErrFormat)
	}
	ns := ci.SpanDigestsLength()
	if !vectorOK(ns, 4, len(d.b)) || int64(ns) > z.CompressedSize {
		return nil, fmt.Errorf("%w: %d span digests in %d bytes, of a blob of %d", ErrFormat, ns, len(d.b), z.CompressedSize)
	}

	// first pass: claim every record, add up the copies
	if err := d.entries(toc, nil); err != nil {
		return nil, err
	}
	for i := range ns {
		s := ci.SpanDigests(i)
		if _, err := d.str(s, "the digest of span", i); err != nil {
			return nil, err
		}
		d.need += stringBytes + int64(len(s))
	}
	cpb := ci.CheckpointsBytes()
	if _, err := d.str(cpb, "the checkpoint blob", 0); err != nil {
		return nil, err
	}
	d.need += int64(len(cpb))/PackedCheckpointSize*checkpointBytes + WindowSize // a v1 blob's first window is allocated
	d.need += int64(n) * fileBytes
	if l.Reserve != nil {
		if err := l.Reserve(d.need); err != nil {
			return nil, fmt.Errorf("%w: zTOC of %d entries decodes into %d bytes: %w", ErrTooLarge, n, d.need, err)
		}
	}
	d.seen = nil

	// second pass: copy
	z.Version, z.BuildTool = string(version), string(tool)
	z.Files = make([]File, n)
	if err := d.entries(toc, z.Files); err != nil {
		return nil, err
	}
	switch ci.CompressionAlgorithm() {
	case fb.CompressionAlgorithmGzip:
		z.Algorithm = AlgorithmGzip
	case fb.CompressionAlgorithmUncompressed:
		z.Algorithm = AlgorithmUncompressed
	default:
		return nil, fmt.Errorf("%w: compression algorithm %d", ErrUnsupported, ci.CompressionAlgorithm())
	}
	if int(ci.MaxSpanId()) != ns-1 {
		return nil, fmt.Errorf("%w: max span id %d with %d span digests", ErrInvalid, ci.MaxSpanId(), ns)
	}
	z.SpanDigests = make([]digest.Digest, ns)
	for i := range ns {
		d, err := digest.Parse(string(ci.SpanDigests(i)))
		if err != nil || d.Algorithm() != digest.SHA256 {
			return nil, fmt.Errorf("%w: span digest %d %q is not a sha256 digest", ErrInvalid, i, ci.SpanDigests(i))
		}
		z.SpanDigests[i] = d
	}
	if z.Algorithm == AlgorithmGzip {
		cps, err := ParseCheckpoints(cpb)
		if err != nil {
			return nil, err
		}
		z.Checkpoints = cps
	}
	return z, nil
}

// entries walks the TOC's entries: with files nil it claims their records
// and adds up their copies (the first pass), else it copies them into
// files (the second).
func (d *decoder) entries(toc *fb.TOC, files []File) error {
	var m fb.FileMetadata
	var x fb.Xattr
	for i := range toc.MetadataLength() {
		if !toc.Metadata(&m, i) {
			return fmt.Errorf("%w: entry %d missing", ErrFormat, i)
		}
		nx := m.XattrsLength()
		if files != nil {
			f := &files[i]
			f.Name, f.Type, f.Linkname = string(m.Name()), fileType(m.Type()), string(m.Linkname())
			f.Offset, f.Size, f.Mode = m.UncompressedOffset(), m.UncompressedSize(), m.Mode()
			f.UID, f.GID, f.Uname, f.Gname = m.Uid(), m.Gid(), string(m.Uname()), string(m.Gname())
			f.DevMajor, f.DevMinor = m.Devmajor(), m.Devminor()
			if mt := m.ModTime(); len(mt) > 0 {
				if err := f.ModTime.UnmarshalText(mt); err != nil {
					return fmt.Errorf("%w: entry %q: mod_time %q: %w", ErrInvalid, f.Name, mt, err)
				}
			}
			if nx > 0 {
				f.PAX = make(map[string]string, nx)
			}
			for j := range nx {
				m.Xattrs(&x, j)
				f.PAX[string(x.Key())] = string(x.Value())
			}
			continue
		}
		if err := d.claim(int(m.Table().Pos), 4, "the table of entry", i); err != nil {
			return err
		}
		name, typ, link := m.Name(), m.Type(), m.Linkname()
		if len(name) > nameMax || len(link) > nameMax {
			return fmt.Errorf("%w: entry %d: name of %d bytes, link name of %d", ErrInvalid, i, len(name), len(link))
		}
		if fileType(typ) == "" {
			return fmt.Errorf("%w: entry %q of type %q", ErrInvalid, name, typ)
		}
		if _, err := d.str(typ, "the type of entry", i); err != nil { // not copied: a constant
			return err
		}
		mt := m.ModTime()
		if _, err := d.str(mt, "the mod_time of entry", i); err != nil { // parsed, not copied
			return err
		}
		if len(mt) > 0 && mt[len(mt)-1] != 'Z' {
			d.need += zoneBytes // maybe: time.FixedZone caches whole hours only
		}
		for _, c := range []struct {
			s    []byte
			what string
		}{{name, "the name of entry"}, {link, "the link name of entry"}, {m.Uname(), "the user name of entry"}, {m.Gname(), "the group name of entry"}} {
			if err := d.copied(c.s, c.what, i); err != nil {
				return err
			}
		}
		if !vectorOK(nx, 4, len(d.b)) {
			return fmt.Errorf("%w: entry %d: %d PAX records in %d bytes", ErrFormat, i, nx, len(d.b))
		}
		if nx > 0 {
			d.need += mapBytes + int64(nx)*mapRecordBytes
		}
		for j := range nx {
			if !m.Xattrs(&x, j) {
				return fmt.Errorf("%w: entry %d: PAX record %d missing", ErrFormat, i, j)
			}
			if err := d.claim(int(x.Table().Pos), 4, "a PAX record of entry", i); err != nil {
				return err
			}
			if err := d.copied(x.Key(), "a PAX key of entry", i); err != nil {
				return err
			}
			if err := d.copied(x.Value(), "a PAX value of entry", i); err != nil {
				return err
			}
		}
	}
	return nil
}
