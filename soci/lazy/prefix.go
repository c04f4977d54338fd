package lazy

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"

	"github.com/lazysnap/lazysnap/layer"
	"github.com/lazysnap/lazysnap/soci"
	"github.com/lazysnap/lazysnap/zran"
	"github.com/opencontainers/go-digest"
)

// prefixMargin is how many more uncompressed bytes than asked for a
// prefix must inflate to: what an inflater decodes from the zero bits it
// pads a cut-off input with, before it sees the cut, is at most a few
// symbols of 258 bytes each; the bytes this far before the end of what
// it produced came from the input's own bits.
const prefixMargin = 32 << 10

// prefixSlack is how many more compressed bytes than the span's ratio
// predicts the first request of a prefix asks for.
const prefixSlack = 16 << 10

// spanBytes returns span j inflated, from the cache or fetched through
// blob (what a prefix left is fetched; the cached range dropped and
// fetched again once if it fails its digest: that decides nothing). An
// error wrapping layer.ErrMismatch is the zTOC's (inflate's).
func (d *sociDecoder) spanBytes(ctx context.Context, j int, blob layer.BlobReader) ([]byte, error) {
	if b := d.cachedSpan(j); b != nil {
		return b, nil
	}
	s, e := d.z.SpanRange(j)
	held := d.heldPrefix(j)
	for try := 0; ; try++ {
		raw := held
		if n := int64(len(held)); n < e-s {
			rest, err := blob.ReadRange(ctx, s+n, e-s-n)
			if err != nil {
				return nil, err
			}
			raw = rest
			if n > 0 {
				raw = append(held[:n:n], rest...)
			}
		}
		sum := sha256.Sum256(raw)
		got := digest.NewDigestFromBytes(digest.SHA256, sum[:])
		if got == d.z.SpanDigests[j] {
			d.dropPrefix(j)
			return d.span(j, raw)
		}
		d.dropPrefix(j)
		held = nil
		inv, ok := blob.(layer.Invalidator)
		if !ok || try > 0 {
			return nil, fmt.Errorf("%w: span %d (%d+%d): digest %s, the zTOC says %s", soci.ErrVerify, j, s, e-s, got, d.z.SpanDigests[j])
		}
		inv.Invalidate(s, e-s)
	}
}

// spanPrefix returns at least span j's first n uncompressed bytes: the
// whole span if the decoder holds it or if n is most of it (whole: true,
// verified against the span digest), else inflated from its checkpoint
// out of the span's first compressed bytes, as many as the span's
// compression ratio says n takes (and some). The compressed bytes are
// held (the last prefixHeld spans'), so that a longer prefix of the span
// fetches only what it lacks, and so does the whole span (spanBytes). A
// prefix is not verified: see VerifyEntry.
func (d *sociDecoder) spanPrefix(ctx context.Context, j int, n int64, blob layer.BlobReader) (data []byte, whole bool, err error) {
	if b := d.cachedSpan(j); b != nil {
		return b, true, nil
	}
	s, e := d.z.SpanRange(j)
	os, oe := d.z.SpanOut(j)
	want := n + prefixMargin
	cut := s + prefixSlack + (want*(e-s)+(oe-os)-1)/max(oe-os, 1)*9/8
	if cut >= e || want >= oe-os {
		b, err := d.spanBytes(ctx, j, blob)
		return b, true, err
	}
	held := d.heldPrefix(j)
	if h := int64(len(held)); h < cut-s {
		more, err := blob.ReadRange(ctx, s+h, cut-s-h)
		if err != nil {
			return nil, false, err
		}
		held = append(held[:h:h], more...)
		d.holdPrefix(j, held)
	}
	if b, err := d.inflatePrefix(j, held, want); err == nil {
		return b[:n], false, nil
	}
	// short (or not inflating): the whole span, verified
	b, err := d.spanBytes(ctx, j, blob)
	return b, true, err
}

// prefixHeld is how many spans' prefixes a decoder holds.
const prefixHeld = 4

// rawPrefix is the first compressed bytes of a span, fetched for a prefix.
type rawPrefix struct {
	j   int
	raw []byte
}

// heldPrefix returns the compressed prefix of span j held (nil if none;
// shared: not to be written).
func (d *sociDecoder) heldPrefix(j int) []byte {
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, p := range d.prefixes {
		if p.j == j {
			return p.raw
		}
	}
	return nil
}

// holdPrefix keeps raw as span j's compressed prefix, in place of a
// shorter one or the least recently held.
func (d *sociDecoder) holdPrefix(j int, raw []byte) {
	d.mu.Lock()
	defer d.mu.Unlock()
	for i, p := range d.prefixes {
		if p.j == j {
			d.prefixes = append(d.prefixes[:i:i], d.prefixes[i+1:]...)
			break
		}
	}
	if len(d.prefixes) >= prefixHeld {
		d.prefixes = d.prefixes[1:]
	}
	d.prefixes = append(d.prefixes, rawPrefix{j: j, raw: raw})
}

// dropPrefix forgets span j's prefix.
func (d *sociDecoder) dropPrefix(j int) {
	d.mu.Lock()
	defer d.mu.Unlock()
	for i, p := range d.prefixes {
		if p.j == j {
			d.prefixes = append(d.prefixes[:i:i], d.prefixes[i+1:]...)
			return
		}
	}
}

// inflatePrefix inflates span j's first want bytes from raw, its first
// compressed bytes; io.ErrUnexpectedEOF if raw holds fewer.
func (d *sociDecoder) inflatePrefix(j int, raw []byte, want int64) ([]byte, error) {
	cp := d.z.Checkpoints.List[j]
	r, err := zran.Resume(bytes.NewReader(raw), zran.Checkpoint{In: cp.In, Bits: cp.Bits, Out: cp.Out, Window: cp.Window})
	if err != nil {
		return nil, fmt.Errorf("%w: span %d: checkpoint: %w", soci.ErrVerify, j, err)
	}
	data := make([]byte, want)
	if _, err := io.ReadFull(r, data); err != nil {
		if errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
		return nil, err
	}
	return data, nil
}
