package soci

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"strconv"

	"github.com/klauspost/compress/zstd"
	"github.com/opencontainers/go-digest"
)

// A packed zTOC is a zTOC compressed with zstd, stored as a blob of its
// own beside the zTOC and named by two annotations on the zTOC's
// descriptor in the SOCI index (lazysnap's, which SOCI's readers ignore).
// A zTOC is mostly its checkpoints' 32 KiB windows of the layer's
// uncompressed bytes, which compress as the layer does: the python
// image's 6.5 MB zTOC packs into 2.0 MB, and a reader that knows the
// packed one fetches that before a mount instead. It is only a cheaper
// way to the same bytes: the unpacked zTOC must match the zTOC's digest
// (UnpackZtoc), and any failure falls back to the zTOC itself. The
// packed blob is named by annotations alone, so a registry's garbage
// collection (which follows manifests' layers) may remove it; the
// fallback then costs a round trip.
const (
	AnnotationPackedDigest = "dev.lazysnap.soci.ztoc-zstd-digest"
	AnnotationPackedSize   = "dev.lazysnap.soci.ztoc-zstd-size"
	// PackedMediaType is a packed zTOC's media type.
	PackedMediaType = "application/vnd.lazysnap.soci.ztoc.v1+zstd"
	// packWindow is the zstd window a packed zTOC is written with and the
	// largest UnpackZtoc accepts.
	packWindow = 8 << 20
)

// PackZtoc returns ztoc packed, and sets in ann (the annotations of
// ztoc's descriptor, not nil) the packed blob's digest and size.
func PackZtoc(ztoc []byte, ann map[string]string) ([]byte, error) {
	enc, err := zstd.NewWriter(nil, zstd.WithWindowSize(packWindow), zstd.WithEncoderConcurrency(1), zstd.WithEncoderLevel(zstd.SpeedBetterCompression))
	if err != nil {
		return nil, err
	}
	packed := enc.EncodeAll(ztoc, nil)
	ann[AnnotationPackedDigest] = digest.FromBytes(packed).String()
	ann[AnnotationPackedSize] = strconv.Itoa(len(packed))
	return packed, nil
}

// Packed returns the packed blob's digest and size that a zTOC
// descriptor's annotations name; ok false if they name none (or not
// validly).
func Packed(ann map[string]string) (d digest.Digest, size int64, ok bool) {
	d, err := digest.Parse(ann[AnnotationPackedDigest])
	if err != nil {
		return "", 0, false
	}
	size, err = strconv.ParseInt(ann[AnnotationPackedSize], 10, 64)
	if err != nil || size <= 0 || size > MaxZtocSize {
		return "", 0, false
	}
	return d, size, true
}

// UnpackZtoc returns the zTOC packed holds, which must be size bytes
// whose digest is want: it never allocates more than size bytes for the
// zTOC (nor a window over 8 MiB). Errors wrap ErrTooLarge (more than
// size bytes, or a larger window), ErrVerify (another zTOC) or ErrFormat
// (not zstd).
func UnpackZtoc(packed []byte, size int64, want digest.Digest) ([]byte, error) {
	if size <= 0 || size > MaxZtocSize {
		return nil, fmt.Errorf("%w: packed zTOC of %d bytes (at most %d)", ErrTooLarge, size, MaxZtocSize)
	}
	dec, err := zstd.NewReader(bytes.NewReader(packed), zstd.WithDecoderConcurrency(1), zstd.WithDecoderMaxWindow(packWindow), zstd.WithDecoderMaxMemory(uint64(size)+1))
	if err != nil {
		return nil, fmt.Errorf("%w: packed zTOC: %w", ErrFormat, err)
	}
	defer dec.Close()
	out := make([]byte, size+1)
	n, err := io.ReadFull(dec, out)
	if err != nil && !errors.Is(err, io.ErrUnexpectedEOF) && !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("%w: packed zTOC: %w", ErrFormat, err)
	}
	if int64(n) > size {
		return nil, fmt.Errorf("%w: packed zTOC unpacks into more than its %d bytes", ErrTooLarge, size)
	}
	out = out[:n]
	if int64(n) != size || digest.FromBytes(out) != want {
		return nil, fmt.Errorf("%w: packed zTOC unpacks into %d bytes that are not zTOC %s", ErrVerify, n, want)
	}
	return out, nil
}
