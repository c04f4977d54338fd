package zstdchunked

import (
	"encoding/binary"
	"fmt"
	"math"
	"strconv"
	"strings"

	"github.com/opencontainers/go-digest"
)

// Layer annotations of the two layouts (see the package doc).
const (
	// ManifestChecksumAnnotation is the sha256 of the compressed TOC.
	ManifestChecksumAnnotation = "io.github.containers.zstd-chunked.manifest-checksum"
	// ManifestPositionAnnotation is "offset:length:uncompressed length:type"
	// of the compressed TOC.
	ManifestPositionAnnotation = "io.github.containers.zstd-chunked.manifest-position"
	// TarSplitPositionAnnotation is "offset:length:uncompressed length" of
	// the compressed tar-split metadata.
	TarSplitPositionAnnotation = "io.github.containers.zstd-chunked.tarsplit-position"
	// LegacyManifestChecksumAnnotation and LegacyManifestPositionAnnotation
	// are the older layout's names of the same.
	LegacyManifestChecksumAnnotation = "io.containers.zstd-chunked.manifest-checksum"
	LegacyManifestPositionAnnotation = "io.containers.zstd-chunked.manifest-position"
)

const (
	// skippableHeaderSize is a zstd skippable frame's header: a magic
	// number and the frame's length, 4 bytes each, little endian.
	skippableHeaderSize = 8
	// FooterSize is the current layout's footer: a skippable frame of 64
	// bytes, seven little-endian uint64 (the TOC's offset, compressed and
	// uncompressed length and type, the tar-split's offset, compressed
	// and uncompressed length) and the magic "GNUlInUx".
	FooterSize = skippableHeaderSize + 64
	// LegacyFooterSize is the older layout's footer: a skippable frame of
	// 40 bytes, the first four fields of the current one and the magic
	// "GnUlInUx".
	LegacyFooterSize = skippableHeaderSize + 40
	// manifestTypeCRFS is the only TOC type: eStargz's (CRFS's) JSON.
	manifestTypeCRFS = 1
)

const (
	skippableMagic = "\x50\x2a\x4d\x18" // little endian 0x184D2A50
	footerMagic    = "GNUlInUx"
	legacyMagic    = "GnUlInUx"
)

// Footer locates the TOC (and the tar-split metadata) in a blob. Offsets
// are compressed offsets of frame contents, after their skippable frame
// header.
type Footer struct {
	// Offset, Size and RawSize are the compressed TOC's offset, size and
	// uncompressed size.
	Offset, Size, RawSize int64
	// TarSplitOffset, TarSplitSize and TarSplitRawSize are the tar-split
	// metadata's, zero in the legacy layout.
	TarSplitOffset, TarSplitSize, TarSplitRawSize int64
	// Legacy is the older layout.
	Legacy bool
}

// ParseFooter reads the footer at the end of tail, the last bytes of a blob
// of blobSize bytes, and checks that what it locates lies inside the blob,
// before the footer. It returns the footer and its size.
func ParseFooter(tail []byte, blobSize int64) (Footer, int, error) {
	if len(tail) < LegacyFooterSize || int64(len(tail)) > blobSize {
		return Footer{}, 0, fmt.Errorf("%w: footer: blob tail of %d bytes (blob of %d)", ErrFormat, len(tail), blobSize)
	}
	var f Footer
	size := LegacyFooterSize
	switch string(tail[len(tail)-8:]) {
	case footerMagic:
		if len(tail) < FooterSize {
			return Footer{}, 0, fmt.Errorf("%w: footer: blob tail of %d bytes, need %d", ErrFormat, len(tail), FooterSize)
		}
		size = FooterSize
	case legacyMagic:
		f.Legacy = true
	default:
		return Footer{}, 0, fmt.Errorf("%w: footer: no zstd:chunked magic", ErrFormat)
	}
	b := tail[len(tail)-size:]
	if string(b[:4]) != skippableMagic || binary.LittleEndian.Uint32(b[4:8]) != uint32(size-skippableHeaderSize) {
		return Footer{}, 0, fmt.Errorf("%w: footer: not a skippable frame of %d bytes", ErrFormat, size-skippableHeaderSize)
	}
	p := b[skippableHeaderSize:]
	var v [7]int64
	for i := range v {
		if i >= 4 && f.Legacy {
			break
		}
		u := binary.LittleEndian.Uint64(p[8*i:])
		// offsets and compressed sizes lie in the blob; the uncompressed
		// sizes (2, 6) may well be larger (DecodeTOC caps the TOC's)
		if raw := i == 2 || i == 6; (!raw && u > uint64(blobSize)) || u > math.MaxInt64 {
			return Footer{}, 0, fmt.Errorf("%w: footer: field %d is %d, past the %d-byte blob", ErrFormat, i, u, blobSize)
		}
		v[i] = int64(u)
	}
	if v[3] != manifestTypeCRFS {
		return Footer{}, 0, fmt.Errorf("%w: footer: TOC type %d, want %d", ErrFormat, v[3], manifestTypeCRFS)
	}
	f.Offset, f.Size, f.RawSize = v[0], v[1], v[2]
	f.TarSplitOffset, f.TarSplitSize, f.TarSplitRawSize = v[4], v[5], v[6]
	if err := f.check(blobSize - int64(size)); err != nil {
		return Footer{}, 0, err
	}
	return f, size, nil
}

// check: the TOC, and the tar-split if any, lie in [skippable header, end)
// and do not overlap.
func (f Footer) check(end int64) error {
	if f.Offset < skippableHeaderSize || f.Size <= 0 || f.RawSize <= 0 || f.Size > end-f.Offset {
		return fmt.Errorf("%w: TOC at %d+%d (%d uncompressed) outside the blob's [%d, %d)", ErrFormat, f.Offset, f.Size, f.RawSize, skippableHeaderSize, end)
	}
	if f.TarSplitOffset == 0 && f.TarSplitSize == 0 {
		return nil
	}
	if f.TarSplitOffset < f.Offset+f.Size+skippableHeaderSize || f.TarSplitSize > end-f.TarSplitOffset || f.TarSplitSize < 0 {
		return fmt.Errorf("%w: tar-split at %d+%d outside the blob's [%d, %d) after the TOC", ErrFormat, f.TarSplitOffset, f.TarSplitSize, f.Offset+f.Size, end)
	}
	return nil
}

// DataEnd is where the blob's data frames end: at the TOC's skippable
// frame header.
func (f Footer) DataEnd() int64 { return f.Offset - skippableHeaderSize }

// AppendSkippable appends data as a zstd skippable frame to b.
func AppendSkippable(b, data []byte) []byte {
	b = append(b, skippableMagic...)
	b = binary.LittleEndian.AppendUint32(b, uint32(len(data)))
	return append(b, data...)
}

// Append appends f as a footer frame (the legacy one if f.Legacy) to b.
func (f Footer) Append(b []byte) []byte {
	p := make([]byte, 0, FooterSize-skippableHeaderSize)
	for _, v := range []int64{f.Offset, f.Size, f.RawSize, manifestTypeCRFS} {
		p = binary.LittleEndian.AppendUint64(p, uint64(v))
	}
	if f.Legacy {
		return AppendSkippable(b, append(p, legacyMagic...))
	}
	for _, v := range []int64{f.TarSplitOffset, f.TarSplitSize, f.TarSplitRawSize} {
		p = binary.LittleEndian.AppendUint64(p, uint64(v))
	}
	return AppendSkippable(b, append(p, footerMagic...))
}

// Position is a manifest-position annotation's value.
type Position struct {
	Offset, Size, RawSize int64
}

// String is the annotation's form, "offset:size:raw size:1".
func (p Position) String() string {
	return fmt.Sprintf("%d:%d:%d:%d", p.Offset, p.Size, p.RawSize, manifestTypeCRFS)
}

// ParsePosition parses a manifest-position annotation.
func ParsePosition(v string) (Position, error) {
	parts := strings.Split(v, ":")
	if len(parts) != 4 {
		return Position{}, fmt.Errorf("%w: manifest position %q: want offset:length:length:type", ErrFormat, v)
	}
	var n [4]int64
	for i, s := range parts {
		u, err := strconv.ParseUint(s, 10, 63)
		if err != nil {
			return Position{}, fmt.Errorf("%w: manifest position %q: %w", ErrFormat, v, err)
		}
		n[i] = int64(u)
	}
	if n[3] != manifestTypeCRFS {
		return Position{}, fmt.Errorf("%w: manifest position %q: type %d, want %d", ErrFormat, v, n[3], manifestTypeCRFS)
	}
	return Position{Offset: n[0], Size: n[1], RawSize: n[2]}, nil
}

// ManifestDigest returns the digest a layer's annotations give for its
// TOC (the current name first, then the legacy one); ok is false when
// they name none. A value that is not a valid digest is an error.
func ManifestDigest(annotations map[string]string) (d digest.Digest, ok bool, err error) {
	for _, k := range []string{ManifestChecksumAnnotation, LegacyManifestChecksumAnnotation} {
		v, found := annotations[k]
		if !found {
			continue
		}
		d, err := digest.Parse(v)
		if err != nil {
			return "", true, fmt.Errorf("%w: %s=%q: %w", ErrFormat, k, v, err)
		}
		return d, true, nil
	}
	return "", false, nil
}
