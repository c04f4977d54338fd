package zran

import (
	"errors"
	"fmt"
	"io"
	"slices"
)

// WindowSize is the deflate history size and the length of an Indexer's
// checkpoint windows.
const WindowSize = 32 << 10

var (
	// ErrFormat reports a malformed gzip header or deflate stream.
	ErrFormat = errors.New("zran: malformed gzip/deflate data")
	// ErrChecksum reports a gzip member whose CRC-32 or ISIZE does not match
	// its data.
	ErrChecksum = errors.New("zran: gzip checksum mismatch")
)

// Checkpoint is where decompression can resume: a deflate block boundary.
// See the package documentation for the exact convention (SOCI zinfo's).
type Checkpoint struct {
	// In is the compressed offset of the first whole byte of the block.
	In int64
	// Bits (0..7) is how many high bits of byte In-1 belong to the block;
	// 0 means the block starts at byte In exactly.
	Bits uint8
	// Out is the uncompressed offset of the block's first byte.
	Out int64
	// Window is the uncompressed data before Out: WindowSize bytes from an
	// Indexer (zero-filled before offset 0); Resume accepts shorter ones.
	Window []byte
}

// maxAtZero bounds the checkpoints at uncompressed offset 0. zinfo records
// one at every block boundary before the first output byte, so a stream that
// starts with many empty blocks or members would otherwise cost 32 KiB per
// 5 compressed bytes.
const maxAtZero = 16

// Indexer decompresses a gzip stream (single or multi-member, e.g. pigz
// output) and records a checkpoint after the first header and then at the
// first block boundary after more than span uncompressed bytes since the
// previous checkpoint (see the package documentation).
type Indexer struct {
	d    *decoder
	span int64
	last int64
	cps  []Checkpoint
}

// NewIndexer reads the first gzip header from r and returns an Indexer. span
// must not be negative (0 records a checkpoint at every block boundary).
func NewIndexer(r io.Reader, span int64) (*Indexer, error) {
	if span < 0 {
		return nil, fmt.Errorf("zran: negative span %d", span)
	}
	d := newDecoder(r)
	if err := d.header(true); err != nil {
		return nil, err
	}
	x := &Indexer{d: d, span: span}
	d.ix = x
	return x, nil
}

// Read returns the uncompressed bytes, equal to compress/gzip's.
func (x *Indexer) Read(p []byte) (int, error) { return x.d.read(p) }

// Checkpoints returns the checkpoints recorded so far: all of them once Read
// has returned io.EOF. It is cheap to call often: the slice shares storage
// with the Indexer (later checkpoints are appended past its capacity), so
// its elements and windows must not be modified.
func (x *Indexer) Checkpoints() []Checkpoint { return slices.Clip(x.cps) }

// CompressedSize returns how many compressed bytes have been consumed: the
// blob's size once Read has returned io.EOF.
func (x *Indexer) CompressedSize() int64 { return (x.d.bitPos() + 7) / 8 }

// boundary is called at each block boundary that is not after a member's
// final block, before the block header is read.
func (x *Indexer) boundary(d *decoder) {
	out := d.outBase + int64(d.w)
	if out != 0 && out-x.last <= x.span || out == 0 && len(x.cps) >= maxAtZero {
		return
	}
	p := d.bitPos()
	x.cps = append(x.cps, Checkpoint{
		In:     (p + 7) / 8,
		Bits:   uint8((8 - p%8) % 8),
		Out:    out,
		Window: slices.Clone(d.buf[d.w-WindowSize : d.w]),
	})
	x.last = out
}

// Resume returns the uncompressed bytes from cp.Out on. r yields the blob's
// bytes starting at cp.In-1 if cp.Bits > 0, else at cp.In. Decompression
// continues across later gzip members; see the package documentation.
func Resume(r io.Reader, cp Checkpoint) (io.Reader, error) {
	if cp.Bits > 7 || len(cp.Window) > WindowSize || cp.Out < 0 || cp.In < int64(min(cp.Bits, 1)) {
		return nil, fmt.Errorf("%w: invalid checkpoint (in %d, bits %d, out %d, window %d bytes)",
			ErrFormat, cp.In, cp.Bits, cp.Out, len(cp.Window))
	}
	d := newDecoder(r)
	d.lo = WindowSize - len(cp.Window)
	copy(d.buf[d.lo:], cp.Window)
	d.outBase = cp.Out - WindowSize
	d.inBase = cp.In
	if cp.Bits > 0 {
		d.inBase--
		b, err := d.readByte()
		if err != nil {
			return nil, err
		}
		d.bb, d.nb = uint64(b>>(8-cp.Bits)), uint(cp.Bits)
	}
	d.state, d.raw = stBlock, true
	return &resumed{d}, nil
}

// resumed is the reader Resume returns.
type resumed struct{ d *decoder }

func (r *resumed) Read(p []byte) (int, error) { return r.d.read(p) }
