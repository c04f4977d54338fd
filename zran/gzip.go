package zran

import (
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"io"
)

// gzip header flags (RFC 1952, 2.3.1)
const (
	flagHCRC    = 1 << 1
	flagExtra   = 1 << 2
	flagName    = 1 << 3
	flagComment = 1 << 4

	maxHeaderString = 512 // compress/gzip's limit on FNAME and FCOMMENT, NUL included
)

// header reads a gzip member header. At the start of a later member, the end
// of input is the end of the stream (io.EOF), as in compress/gzip.
func (d *decoder) header(first bool) error {
	if !first && d.ip >= len(d.in) && !d.readMore() {
		if d.rerr == io.EOF {
			return io.EOF
		}
		return d.rerr
	}
	var hcrc uint32
	next := func() (byte, error) {
		b, err := d.readByte()
		if err == nil {
			hcrc = crc32.Update(hcrc, crc32.IEEETable, d.in[d.ip-1:d.ip])
		}
		return b, err
	}
	var h [10]byte
	if err := d.readFull(h[:]); err != nil {
		return err
	}
	hcrc = crc32.ChecksumIEEE(h[:])
	if h[0] != 0x1f || h[1] != 0x8b || h[2] != 8 {
		return fmt.Errorf("%w: not a gzip member header at compressed offset %d", ErrFormat, d.bitPos()/8-10)
	}
	flg := h[3]
	if flg&flagExtra != 0 {
		var n int
		for i := range 2 {
			b, err := next()
			if err != nil {
				return err
			}
			n |= int(b) << (8 * i)
		}
		for range n {
			if _, err := next(); err != nil {
				return err
			}
		}
	}
	for _, f := range []byte{flagName, flagComment} {
		if flg&f == 0 {
			continue
		}
		for i := 0; ; i++ {
			if i >= maxHeaderString {
				return fmt.Errorf("%w: gzip header name or comment too long", ErrFormat)
			}
			b, err := next()
			if err != nil {
				return err
			}
			if b == 0 {
				break
			}
		}
	}
	if flg&flagHCRC != 0 {
		want := uint16(hcrc)
		var c [2]byte
		if err := d.readFull(c[:]); err != nil {
			return err
		}
		if binary.LittleEndian.Uint16(c[:]) != want {
			return fmt.Errorf("%w: gzip header CRC mismatch", ErrFormat)
		}
	}
	d.state, d.final, d.raw = stBlock, false, false
	d.crc, d.size, d.crcPos = 0, 0, d.w
	d.lo = d.w
	return nil
}

// trailer reads and checks a member's CRC-32 and ISIZE (not for the member a
// resumed decoder started in: its CRC covers bytes before the checkpoint).
func (d *decoder) trailer() error {
	if err := d.unread(); err != nil {
		return err
	}
	var t [8]byte
	if err := d.readFull(t[:]); err != nil {
		return err
	}
	d.checksum()
	if !d.raw {
		crc, size := binary.LittleEndian.Uint32(t[:]), binary.LittleEndian.Uint32(t[4:])
		if crc != d.crc || size != d.size {
			return fmt.Errorf("%w: member ending at compressed offset %d: CRC-32 %08x, ISIZE %d; data has %08x, %d",
				ErrChecksum, d.bitPos()/8, crc, size, d.crc, d.size)
		}
	}
	d.state = stHeader
	return nil
}
