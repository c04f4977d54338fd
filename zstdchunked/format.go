package zstdchunked

import (
	"context"
	"errors"
	"fmt"
	"io"

	"github.com/lazysnap/lazysnap/estargz"
	"github.com/lazysnap/lazysnap/layer"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// Format is zstd:chunked as a lazily loadable layer format
// (layer.Format): a zstd layer whose files are frames of their own and
// whose TOC, a compressed skippable frame near its end, is verified
// against the manifest-checksum annotation (either layout's name).
// Containerd does not pass those annotations as snapshot labels, so the
// mount reads them from the image manifest. The eStargz library's
// converter annotates its zstd:chunked layers with an eStargz TOC digest
// instead: this format claims those too, after eStargz, whose Open
// leaves them to it (layer.ErrOtherFormat), and verifies the TOC JSON
// against that digest.
type Format struct {
	// MaxEntries caps a layer's TOC (0: estargz.DefaultMaxEntries).
	MaxEntries int
}

var (
	_ layer.Format  = Format{}
	_ layer.Tailer  = Format{}
	_ layer.Decoder = (*Decoder)(nil)
)

// Name implements layer.Format.
func (Format) Name() string { return "zstd:chunked" }

// IndexDigest implements layer.Format: the manifest checksum, or the
// eStargz TOC digest.
func (Format) IndexDigest(desc ocispec.Descriptor) (digest.Digest, bool, error) {
	d, ok, err := ManifestDigest(desc.Annotations)
	if ok || err != nil {
		return d, ok, err
	}
	return estargz.Format{}.IndexDigest(desc)
}

// IndexStart implements layer.Tailer: the TOC offset the footer names.
func (Format) IndexStart(tail []byte, size int64) (int64, bool) {
	f, _, err := ParseFooter(tail, size)
	return f.Offset, err == nil
}

// Open implements layer.Format: the TOC is decoded straight into the
// index, taking the footer (and a small layer's whole TOC) from the
// blob's tail when it has one. A blob with no zstd:chunked footer is
// another format's.
func (f Format) Open(ctx context.Context, b layer.Blob, toc digest.Digest, build layer.Build) (layer.Decoder, error) {
	o := Options{Digest: toc, MaxEntries: f.MaxEntries}
	if tb, ok := b.(layer.TailBlob); ok {
		o.Tail = tb.Tail()
	}
	sr := io.NewSectionReader(b, 0, b.Size())
	_, err := build(func(sink layer.Sink) (layer.Info, error) {
		info, _, err := DecodeTOC(sr, sink, o)
		return info.LayerInfo(), err
	})
	if errors.Is(err, ErrFormat) {
		return nil, fmt.Errorf("%w: %w", layer.ErrOtherFormat, err)
	}
	if err != nil {
		return nil, err
	}
	return &Decoder{}, nil
}
