package zran

import (
	"errors"
	"io"
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
	return nil, errors.New("zran: not implemented yet")
}

// Read returns the uncompressed bytes, equal to compress/gzip's.
func (x *Indexer) Read(p []byte) (int, error) { return 0, errors.New("zran: not implemented yet") }

// Checkpoints returns the checkpoints recorded so far: all of them once Read
// has returned io.EOF.
func (x *Indexer) Checkpoints() []Checkpoint { return append([]Checkpoint(nil), x.cps...) }

// CompressedSize returns how many compressed bytes have been consumed: the
// blob's size once Read has returned io.EOF.
func (x *Indexer) CompressedSize() int64 { return 0 }

// Resume returns the uncompressed bytes from cp.Out on. r yields the blob's
// bytes starting at cp.In-1 if cp.Bits > 0, else at cp.In. Decompression
// continues across later gzip members; see the package documentation.
func Resume(r io.Reader, cp Checkpoint) (io.Reader, error) {
	return nil, errors.New("zran: not implemented yet")
}

type decoder struct{}
