package lazy

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"hash"
	"io"

	"github.com/klauspost/compress/gzip"
	"github.com/lazysnap/lazysnap/soci"
	"github.com/lazysnap/lazysnap/zran"
	"github.com/opencontainers/go-digest"
)

// CheckBlob implements BlobChecker: once the layer is complete, its tar is
// read from the start and every entry's header is compared with the zTOC's
// entry at the same place, in order, and with what the index serves of it
// (compareEntry); no entry may be missing or extra. The spans' reads and
// VerifyEntry compare only the headers of the spans they reach, so this
// is what finds a zTOC that lists a file the layer lacks, or omits one it
// has (a whiteout, say). The same pass checks the checkpoints (see
// checkpointCheck): each window against the layer's 32 KiB before it, and
// each span's bytes as inflated from its checkpoint (all that was served
// of it) against the layer's.
func (d *sociDecoder) CheckBlob(ctx context.Context, blob io.Reader) error {
	defer io.Copy(io.Discard, blob) // the verifier hashes what is left
	cc := newCheckpointCheck(d)
	in := io.TeeReader(blob, compressedSide{cc})
	zr, err := gzip.NewReader(in)
	if err != nil {
		return fmt.Errorf("%w: the layer is not gzip: %v", errZtocMismatch, err)
	}
	cr := &countingReader{r: io.TeeReader(zr, plainSide{cc})}
	tr := tar.NewReader(cr)
	i := 0
	for ; ; i++ {
		if err := ctx.Err(); err != nil {
			return err
		}
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return fmt.Errorf("%w: the layer's tar after %d entries: %v", errZtocMismatch, i, err)
		}
		if i >= len(d.heads) {
			return fmt.Errorf("%w: the layer has an entry %q at %d past the zTOC's %d", errZtocMismatch, h.Name, cr.n, len(d.heads))
		}
		if err := d.heads[i].matches(h, cr.n); err != nil {
			return fmt.Errorf("%w: entry %d: %w", errZtocMismatch, i, err)
		}
		if err := d.compareEntry(i, h); err != nil {
			return fmt.Errorf("%w: entry %d: %w", errZtocMismatch, i, err)
		}
	}
	if i != len(d.heads) {
		return fmt.Errorf("%w: the layer's tar has %d entries, the zTOC %d (the next it lists: %q at %d)", errZtocMismatch, i, len(d.heads), d.heads[i].name, d.heads[i].off)
	}
	// the rest of the stream (the tar's padding, later gzip members) for
	// the last span's checks
	if _, err := io.Copy(io.Discard, cr); err != nil {
		return fmt.Errorf("%w: the layer's gzip stream: %v", errZtocMismatch, err)
	}
	if _, err := io.Copy(io.Discard, in); err != nil {
		return err
	}
	return cc.finish()
}

// checkpointCheck checks a zTOC's checkpoints while the whole layer
// streams past, compressed (compressedSide) and inflated (plainSide).
// A checkpoint's window is the zTOC's word alone: bytes inflated from it
// are not covered by the span digest, which covers the compressed bytes
// only, so a forged window changes what a span inflates to, undetectable
// when it is served. Here, with the layer's bytes trusted (the verifier
// hashes the same stream against the blob digest), each window is
// compared with the 32 KiB of the tar stream before its checkpoint, and
// each span is inflated again from its compressed bytes and checkpoint,
// as it was when served (inflating is deterministic), and its sha256
// compared with that of the tar stream's bytes of the span: so a forged
// position (In, Bits) is found too. That costs a second inflate of the
// layer, here rather than a hash of every span on the read path.
type checkpointCheck struct {
	d   *sociDecoder
	err error // the first mismatch

	// the inflated stream
	pos   int64 // bytes seen
	k     int   // the span pos is in
	h     hash.Hash
	ring  []byte // the last WindowSize bytes, by pos % WindowSize
	truth [][sha256.Size]byte

	// the compressed stream
	cpos   int64 // bytes seen
	ck     int   // the span whose compressed bytes are being gathered
	buf    []byte
	bufOff int64
	mine   [][sha256.Size]byte // each span's, inflated from its checkpoint
	mineOK []bool
}

func newCheckpointCheck(d *sociDecoder) *checkpointCheck {
	n := len(d.z.Checkpoints.List)
	return &checkpointCheck{d: d, h: sha256.New(), ring: make([]byte, soci.WindowSize),
		truth: make([][sha256.Size]byte, n), mine: make([][sha256.Size]byte, n), mineOK: make([]bool, n)}
}

func (c *checkpointCheck) fail(err error) {
	if c.err == nil {
		c.err = fmt.Errorf("%w: %w", errZtocMismatch, err)
	}
}

type plainSide struct{ c *checkpointCheck }

func (p plainSide) Write(b []byte) (int, error) {
	c := p.c
	n := len(b)
	z := c.d.z
	for c.k < len(z.Checkpoints.List) {
		_, oe := z.SpanOut(c.k)
		m := min(int64(len(b)), oe-c.pos)
		c.h.Write(b[:m])
		for j := int64(0); j < m; {
			at := (c.pos + j) % soci.WindowSize
			j += int64(copy(c.ring[at:], b[j:m]))
		}
		c.pos += m
		b = b[m:]
		if c.pos < oe {
			break
		}
		c.h.Sum(c.truth[c.k][:0])
		c.h.Reset()
		c.k++
		if c.k < len(z.Checkpoints.List) {
			c.checkWindow(c.k)
		}
	}
	return n, nil
}

// checkWindow compares checkpoint k's window with the stream's bytes
// before it (pos is its Out): as many as the stream and the window have.
func (c *checkpointCheck) checkWindow(k int) {
	w := c.d.z.Checkpoints.List[k].Window
	n := min(c.pos, int64(len(w)))
	for j := int64(0); j < n; j++ {
		if c.ring[(c.pos-n+j)%soci.WindowSize] != w[int64(len(w))-n+j] {
			c.fail(fmt.Errorf("checkpoint %d (uncompressed offset %d): its window differs from the layer's bytes before it at %d", k, c.pos, c.pos-n+j))
			return
		}
	}
}

type compressedSide struct{ c *checkpointCheck }

func (p compressedSide) Write(b []byte) (int, error) {
	c := p.c
	z := c.d.z
	c.buf = append(c.buf, b...)
	c.cpos += int64(len(b))
	for c.ck < len(z.Checkpoints.List) {
		s, e := z.SpanRange(c.ck)
		if c.cpos < e {
			break
		}
		if s >= c.bufOff {
			c.mine[c.ck], c.mineOK[c.ck] = c.inflateSum(c.ck, c.buf[s-c.bufOff:e-c.bufOff])
		}
		c.ck++
		next := e
		if c.ck < len(z.Checkpoints.List) {
			next, _ = z.SpanRange(c.ck)
		}
		if next > c.bufOff {
			c.buf = append(c.buf[:0], c.buf[next-c.bufOff:]...)
			c.bufOff = next
		}
	}
	return len(b), nil
}

// inflateSum inflates span k from its raw bytes and checkpoint and
// returns the sha256 of what it inflates to.
func (c *checkpointCheck) inflateSum(k int, raw []byte) ([sha256.Size]byte, bool) {
	var sum [sha256.Size]byte
	z := c.d.z
	got := sha256.Sum256(raw)
	if dg := digest.NewDigestFromBytes(digest.SHA256, got[:]); dg != z.SpanDigests[k] {
		c.fail(fmt.Errorf("span %d: digest %s, the zTOC says %s", k, dg, z.SpanDigests[k]))
		return sum, false
	}
	cp := z.Checkpoints.List[k]
	os, oe := z.SpanOut(k)
	r, err := zran.Resume(bytes.NewReader(raw), zran.Checkpoint{In: cp.In, Bits: cp.Bits, Out: cp.Out, Window: cp.Window})
	h := sha256.New()
	if err == nil {
		var n int64
		n, err = io.Copy(h, io.LimitReader(r, oe-os))
		if err == nil && n != oe-os {
			err = io.ErrUnexpectedEOF
		}
	}
	if err != nil {
		c.fail(fmt.Errorf("span %d does not inflate from its checkpoint: %v", k, err))
		return sum, false
	}
	h.Sum(sum[:0])
	return sum, true
}

// finish compares each span's inflated bytes with the layer's.
func (c *checkpointCheck) finish() error {
	if c.err != nil {
		return c.err
	}
	for k := range c.truth {
		if k >= c.k {
			break // the stream ended before the span (the tar check says why)
		}
		if !c.mineOK[k] {
			return fmt.Errorf("%w: span %d was not inflated from its checkpoint (its compressed bytes did not come whole)", errZtocMismatch, k)
		}
		if c.mine[k] != c.truth[k] {
			os, oe := c.d.z.SpanOut(k)
			return fmt.Errorf("%w: span %d (%d+%d): the bytes inflated from its checkpoint differ from the layer's: its window or position is forged", errZtocMismatch, k, os, oe-os)
		}
	}
	return nil
}
