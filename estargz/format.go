package estargz

import (
	"context"
	"errors"
	"fmt"
	"io"

	"github.com/lazysnap/lazysnap/layer"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// Format is eStargz as a lazily loadable layer format (layer.Format): a
// gzip layer whose TOC (a JSON index of its files and chunks) sits at its
// end, found by its footer, verified against the TOC digest annotation.
// The eStargz library's zstd:chunked layers carry that annotation too:
// Open says so (layer.ErrOtherFormat), and the zstd:chunked format,
// which claims such layers after this one, reads them.
type Format struct {
	// MaxEntries caps a layer's TOC (0: DefaultMaxEntries).
	MaxEntries int
}

var (
	_ layer.Format  = Format{}
	_ layer.Tailer  = Format{}
	_ layer.Decoder = Decoder{}
)

// Name implements layer.Format.
func (Format) Name() string { return "estargz" }

// IndexDigest implements layer.Format: the TOC digest annotation.
func (Format) IndexDigest(desc ocispec.Descriptor) (digest.Digest, bool, error) {
	v, ok := desc.Annotations[TOCJSONDigestAnnotation]
	if !ok {
		return "", false, nil
	}
	d, err := digest.Parse(v)
	if err != nil {
		return "", true, fmt.Errorf("%w: %s=%q: %w", ErrFormat, TOCJSONDigestAnnotation, v, err)
	}
	return d, true, nil
}

// IndexStart implements layer.Tailer: the TOC offset the footer names.
func (Format) IndexStart(tail []byte, size int64) (int64, bool) {
	off, _, err := ParseFooter(tail)
	return off, err == nil && off < size
}

// Open implements layer.Format: the TOC is decoded straight into the
// index (DecodeTOC), taking what it can from the blob's tail when it has
// one.
func (f Format) Open(ctx context.Context, b layer.Blob, toc digest.Digest, build layer.Build) (layer.Decoder, error) {
	opts := []OpenOption{WithTOCDigest(toc)}
	if tb, ok := b.(layer.TailBlob); ok {
		opts = append(opts, WithTail(tb.Tail()))
	}
	if f.MaxEntries > 0 {
		opts = append(opts, WithMaxEntries(f.MaxEntries))
	}
	sr := io.NewSectionReader(b, 0, b.Size())
	_, err := build(func(s layer.Sink) (layer.Info, error) {
		info, err := DecodeTOC(sr, s, opts...)
		return info.LayerInfo(), err
	})
	if errors.Is(err, ErrFormat) {
		return nil, fmt.Errorf("%w: %w", layer.ErrOtherFormat, err)
	}
	if err != nil {
		return nil, err
	}
	return Decoder{}, nil
}
