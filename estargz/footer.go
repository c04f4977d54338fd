package estargz

import (
	"encoding/binary"
	"fmt"
	"strconv"
)

const (
	// TOCTarName is the name of the tar entry holding the TOC JSON.
	TOCTarName = "stargz.index.json"

	// TOCJSONDigestAnnotation is the layer annotation (in the image manifest's
	// layers[].annotations) that records the sha256 of the uncompressed TOC JSON.
	TOCJSONDigestAnnotation = "containerd.io/snapshot/stargz/toc.digest"

	// TailSizeAnnotation is the layer annotation that records how many
	// bytes of the blob's end hold the TOC and the footer (the compressed
	// TOC member's offset to the blob's end), so that a reader fetches them
	// in one request rather than the footer first. lazysnap convert writes
	// it; it is a hint only (the TOC is verified against its digest, and a
	// tail too short is read on as without it). Its prefix makes
	// containerd pass it to snapshotters as a label.
	TailSizeAnnotation = "containerd.io/snapshot/lazysnap/tail-size"

	// UncompressedSizeAnnotation records the uncompressed size of the layer.
	UncompressedSizeAnnotation = "io.containers.estargz.uncompressed-size"

	// PrefetchLandmark ends the prioritized files at the start of a layer.
	PrefetchLandmark = ".prefetch.landmark"
	// NoPrefetchLandmark, first in a layer, says no file is prioritized.
	NoPrefetchLandmark = ".no.prefetch.landmark"
	// landmarkContents is the single byte a landmark file holds.
	landmarkContents = 0x0f

	// FooterSize is the size of the eStargz footer. It is an empty gzip member
	// with no compression whose header carries one Extra subfield:
	//
	//	10 bytes  gzip header: 1f 8b 08, FLG=FEXTRA(04), MTIME(4), XFL, OS
	//	 2 bytes  XLEN = 26 (little endian): 4 bytes subfield header + 22
	//	 2 bytes  subfield id SI1='S' SI2='G'
	//	 2 bytes  subfield LEN = 22 (little endian)
	//	22 bytes  fmt.Sprintf("%016xSTARGZ", tocOffset)
	//	 5 bytes  an empty final stored deflate block: 01 00 00 ff ff
	//	 8 bytes  gzip trailer: CRC32 and ISIZE of nothing, both zero
	//
	// 10+2+2+2+22+5+8 = 51.
	FooterSize = 51

	// LegacyFooterSize is the footer of the original stargz format (CRFS):
	// the same member but with the 22 payload bytes as the whole Extra field
	// and no subfield header, so XLEN=22 and 10+2+22+5+8 = 47.
	LegacyFooterSize = 47

	footerPayloadLen = 22 // 16 hex digits + len("STARGZ")
	footerMagic      = "STARGZ"
)

// emptyDeflateAndTrailer is a final stored deflate block of length zero
// followed by a gzip trailer with CRC32 0 and ISIZE 0.
var emptyDeflateAndTrailer = [13]byte{0x01, 0x00, 0x00, 0xff, 0xff}

// Footer returns the 51-byte eStargz footer that points at tocOffset.
func Footer(tocOffset int64) []byte {
	b := make([]byte, 0, FooterSize)
	b = append(b, 0x1f, 0x8b, 0x08, 0x04, 0, 0, 0, 0, 0, 0xff)
	b = binary.LittleEndian.AppendUint16(b, 4+footerPayloadLen)
	b = append(b, 'S', 'G')
	b = binary.LittleEndian.AppendUint16(b, footerPayloadLen)
	b = fmt.Appendf(b, "%016x%s", tocOffset, footerMagic)
	b = append(b, emptyDeflateAndTrailer[:]...)
	return b
}

// ParseFooter finds the TOC offset in the last bytes of a blob. tail must hold
// at least the last LegacyFooterSize bytes of the blob; given FooterSize or
// more bytes, the eStargz footer is tried first and the legacy one second.
// It returns the TOC offset and the footer's size.
func ParseFooter(tail []byte) (tocOffset int64, footerSize int, err error) {
	if len(tail) >= FooterSize {
		if off, err := parseFooter(tail[len(tail)-FooterSize:], false); err == nil {
			return off, FooterSize, nil
		}
	}
	if len(tail) < LegacyFooterSize {
		return 0, 0, fmt.Errorf("%w: footer: blob tail is %d bytes, need at least %d", ErrFormat, len(tail), LegacyFooterSize)
	}
	off, err := parseFooter(tail[len(tail)-LegacyFooterSize:], true)
	if err != nil {
		return 0, 0, err
	}
	return off, LegacyFooterSize, nil
}

func parseFooter(b []byte, legacy bool) (int64, error) {
	if b[0] != 0x1f || b[1] != 0x8b || b[2] != 0x08 {
		return 0, fmt.Errorf("%w: footer: not a gzip header", ErrFormat)
	}
	if b[3] != 0x04 { // FEXTRA only: no name, comment or header CRC may follow
		return 0, fmt.Errorf("%w: footer: gzip flags %#x, want FEXTRA only", ErrFormat, b[3])
	}
	xlen := int(binary.LittleEndian.Uint16(b[10:12]))
	extra := b[12:]
	if legacy {
		if xlen != footerPayloadLen {
			return 0, fmt.Errorf("%w: legacy footer: extra length %d, want %d", ErrFormat, xlen, footerPayloadLen)
		}
	} else {
		if xlen != 4+footerPayloadLen {
			return 0, fmt.Errorf("%w: footer: extra length %d, want %d", ErrFormat, xlen, 4+footerPayloadLen)
		}
		if extra[0] != 'S' || extra[1] != 'G' || binary.LittleEndian.Uint16(extra[2:4]) != footerPayloadLen {
			return 0, fmt.Errorf("%w: footer: no SG extra subfield", ErrFormat)
		}
		extra = extra[4:]
	}
	payload := extra[:footerPayloadLen]
	if string(payload[16:]) != footerMagic {
		return 0, fmt.Errorf("%w: footer: magic %q, want %q", ErrFormat, payload[16:], footerMagic)
	}
	if rest := extra[footerPayloadLen:]; string(rest) != string(emptyDeflateAndTrailer[:]) {
		return 0, fmt.Errorf("%w: footer: member is not empty", ErrFormat)
	}
	off, err := strconv.ParseUint(string(payload[:16]), 16, 63)
	if err != nil {
		return 0, fmt.Errorf("%w: footer: TOC offset %q: %v", ErrFormat, payload[:16], err)
	}
	return int64(off), nil
}
