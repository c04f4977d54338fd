package soci

import (
	"encoding/binary"
	"fmt"
)

// WindowSize is the inflate window a checkpoint carries (deflate's 32 KiB).
const WindowSize = 32 << 10

// PackedCheckpointSize is one checkpoint in the blob: compressed offset (8
// bytes), uncompressed offset (8), bits (1), window.
const PackedCheckpointSize = 8 + 8 + 1 + WindowSize

// checkpointsHeader is the blob's header: the number of checkpoints (4
// bytes) and the span size (8).
const checkpointsHeader = 4 + 8

// v1FirstIn is where a version 1 blob, which leaves out the first
// checkpoint, has it: after a 10-byte gzip header with no optional fields.
const v1FirstIn = 10

// Checkpoint is where a span starts: the inflater's state at a deflate
// block boundary.
type Checkpoint struct {
	In     int64  // compressed offset of the first full byte of the span
	Bits   uint8  // bits (0-7) of the span taken from the byte at In-1
	Out    int64  // uncompressed offset of the span
	Window []byte // the WindowSize uncompressed bytes before Out (zeros at the start)
}

// Checkpoints is the checkpoint blob of a zTOC (SOCI's "zinfo"): all
// integers little-endian.
type Checkpoints struct {
	// SpanSize is the uncompressed span size the index was built with: a
	// checkpoint is taken at the first block boundary past it.
	SpanSize int64
	List     []Checkpoint
	// V1 marks a version 1 blob, which leaves out the first checkpoint
	// (Marshal writes it back the same way).
	V1 bool
}

// ParseCheckpoints parses a checkpoint blob. The windows alias b. Errors
// wrap ErrFormat or ErrInvalid.
func ParseCheckpoints(b []byte) (Checkpoints, error) {
	if len(b) < checkpointsHeader {
		return Checkpoints{}, fmt.Errorf("%w: checkpoint blob of %d bytes", ErrFormat, len(b))
	}
	n := int64(int32(binary.LittleEndian.Uint32(b)))
	cps := Checkpoints{SpanSize: int64(binary.LittleEndian.Uint64(b[4:]))}
	body := int64(len(b) - checkpointsHeader)
	switch {
	case n < 1:
		return Checkpoints{}, fmt.Errorf("%w: %d checkpoints", ErrInvalid, n)
	case body == n*PackedCheckpointSize:
	case body == (n-1)*PackedCheckpointSize:
		cps.V1 = true
	default:
		return Checkpoints{}, fmt.Errorf("%w: %d checkpoints in %d bytes", ErrFormat, n, len(b))
	}
	if cps.SpanSize <= 0 {
		return Checkpoints{}, fmt.Errorf("%w: span size %d", ErrInvalid, cps.SpanSize)
	}
	cps.List = make([]Checkpoint, 0, n)
	if cps.V1 {
		cps.List = append(cps.List, Checkpoint{In: v1FirstIn, Window: make([]byte, WindowSize)})
	}
	for p := b[checkpointsHeader:]; len(p) > 0; p = p[PackedCheckpointSize:] {
		c := Checkpoint{
			In:     int64(binary.LittleEndian.Uint64(p)),
			Out:    int64(binary.LittleEndian.Uint64(p[8:])),
			Bits:   p[16],
			Window: p[17:PackedCheckpointSize:PackedCheckpointSize],
		}
		if c.In < 0 || c.Out < 0 || c.Bits > 7 {
			return Checkpoints{}, fmt.Errorf("%w: checkpoint %d: in %d, out %d, bits %d", ErrInvalid, len(cps.List), c.In, c.Out, c.Bits)
		}
		cps.List = append(cps.List, c)
	}
	return cps, nil
}

// Marshal returns the checkpoint blob.
func (c Checkpoints) Marshal() []byte {
	list := c.List
	if c.V1 && len(list) > 0 {
		list = list[1:]
	}
	b := make([]byte, checkpointsHeader, checkpointsHeader+len(list)*PackedCheckpointSize)
	binary.LittleEndian.PutUint32(b, uint32(len(c.List)))
	binary.LittleEndian.PutUint64(b[4:], uint64(c.SpanSize))
	for _, cp := range list {
		b = binary.LittleEndian.AppendUint64(b, uint64(cp.In))
		b = binary.LittleEndian.AppendUint64(b, uint64(cp.Out))
		b = append(b, cp.Bits)
		w := len(b)
		b = append(b, make([]byte, WindowSize)...)
		copy(b[w:], cp.Window)
	}
	return b
}
