package remote

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"

	"github.com/lazysnap/lazysnap/estargz"
	"github.com/lazysnap/lazysnap/fetcher"
	lfs "github.com/lazysnap/lazysnap/fs"
	"github.com/lazysnap/lazysnap/index"
	"github.com/lazysnap/lazysnap/layer"
	"github.com/lazysnap/lazysnap/snapshotter"
	"github.com/lazysnap/lazysnap/soci"
	"github.com/lazysnap/lazysnap/zstdchunked"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// Format is one lazily loadable layer format: how a layer's descriptor
// names the digest of its index, and how the index is read from the blob
// and verified against it. A new format is one more implementation, listed
// in formats.
type Format interface {
	// Name names the format in status and errors ("estargz").
	Name() string
	// IndexDigest returns the digest that the layer's index is verified
	// against, from its descriptor; ok is false when desc is not a layer
	// of this format. A descriptor that claims the format but names no
	// valid digest is an error wrapping snapshotter.ReasonNotLazy.
	IndexDigest(desc ocispec.Descriptor) (d digest.Digest, ok bool, err error)
	// Open reads the layer's index from b, verified against d. Its errors
	// wrap its format package's sentinels (and index's), or are the blob's
	// errors, as they are: Mount gives them their fallback Reason
	// (fallbackReason), the one place that does. An Open may wrap a
	// Reason itself for a decision no sentinel names.
	Open(ctx context.Context, b Blob, d digest.Digest) (*index.Index, lfs.Decoder, error)
}

// fallbackReason gives an error of a Format's Open the snapshotter.Reason
// its layer falls back with, keeping the error (%w) so that its kind
// survives: the one mapping from the formats' errors to reasons. The
// blob's errors come first, whatever else the error wraps: a registry
// that timed out is ReasonTimeout (the layer may well be lazy, it was not
// read), its other errors carry no Reason (the snapshotter counts a
// mount error). Bytes that do not match the digest vouching for them are
// ReasonVerification; bytes that are no valid layer of the format, or
// past a cap, ReasonNotLazy. An error that carries a Reason keeps it.
func fallbackReason(err error) error {
	var r snapshotter.Reason
	is := func(targets ...error) bool {
		return slices.ContainsFunc(targets, func(t error) bool { return errors.Is(err, t) })
	}
	switch {
	case err == nil || errors.As(err, &r):
		return err
	case is(fetcher.ErrTimeout):
		return fmt.Errorf("%w: %w", snapshotter.ReasonTimeout, err)
	case is(fetcher.ErrNotFound, fetcher.ErrUnauthorized, fetcher.ErrUnavailable, fetcher.ErrBadResponse, fetcher.ErrRangeNotSatisfied):
		return err
	case is(fetcher.ErrDigestMismatch, estargz.ErrVerify, zstdchunked.ErrVerify, soci.ErrVerify):
		return fmt.Errorf("%w: %w", snapshotter.ReasonVerification, err)
	case is(estargz.ErrFormat, estargz.ErrTooLarge, estargz.ErrTooManyEntries, zstdchunked.ErrFormat, zstdchunked.ErrTooLarge,
		soci.ErrFormat, soci.ErrInvalid, soci.ErrTooLarge, soci.ErrUnsupported, index.ErrInvalid, index.ErrBudget):
		return fmt.Errorf("%w: %w", snapshotter.ReasonNotLazy, err)
	}
	return err
}

// formats are the formats Mount tries, in order: the only place that
// knows them all. maxEntries caps a layer's index (0: each format's
// default).
func formats(maxEntries int, mem *index.Budget) []Format {
	return []Format{estargzFormat{maxEntries: maxEntries}, zstdChunkedFormat{maxEntries: maxEntries}, sociFormat{maxEntries: maxEntries, mem: mem}}
}

// pickFormat returns the format of the layer desc describes, with the
// digest its index is verified against.
func pickFormat(desc ocispec.Descriptor, maxEntries int, mem *index.Budget) (Format, digest.Digest, error) {
	for _, f := range formats(maxEntries, mem) {
		d, ok, err := f.IndexDigest(desc)
		if err != nil {
			return nil, "", fmt.Errorf("layer %s: %w", desc.Digest, err)
		}
		if ok {
			return f, d, nil
		}
	}
	soci := ""
	if why, ok := desc.Annotations[annSociNone]; ok {
		soci = "; no SOCI zTOC: " + why
	}
	return nil, "", fmt.Errorf("%w: layer %s (%s) is in no lazily loadable format (it has no %s annotation%s)",
		snapshotter.ReasonNotLazy, desc.Digest, desc.MediaType, estargz.TOCJSONDigestAnnotation, soci)
}

// descriptorFromLabels is the layer's descriptor when the labels carry
// what its format needs, so that Mount need not read the manifest.
func descriptorFromLabels(src snapshotter.LayerSource) (ocispec.Descriptor, bool) {
	if src.TOCDigest == "" {
		return ocispec.Descriptor{}, false
	}
	return ocispec.Descriptor{MediaType: ocispec.MediaTypeImageLayerGzip, Digest: src.Digest,
		Annotations: map[string]string{estargz.TOCJSONDigestAnnotation: src.TOCDigest.String()}}, true
}

// estargzFormat is eStargz: a gzip layer whose TOC (a JSON index of its
// files and chunks) sits at its end, found by its footer, verified against
// the TOC digest annotation.
type estargzFormat struct {
	maxEntries int // 0: estargz.DefaultMaxEntries
}

func (estargzFormat) Name() string { return "estargz" }

func (estargzFormat) IndexDigest(desc ocispec.Descriptor) (digest.Digest, bool, error) {
	v, ok := desc.Annotations[estargz.TOCJSONDigestAnnotation]
	if !ok {
		return "", false, nil
	}
	d, err := digest.Parse(v)
	if err != nil {
		return "", true, fmt.Errorf("%w: %s=%q: %w", snapshotter.ReasonNotLazy, estargz.TOCJSONDigestAnnotation, v, err)
	}
	return d, true, nil
}

// Open decodes the TOC straight into the index (index.Open), taking what
// it can from the blob's tail when it has one.
func (f estargzFormat) Open(ctx context.Context, b Blob, toc digest.Digest) (*index.Index, lfs.Decoder, error) {
	tb, _ := b.(*tailBlob)
	opts := []estargz.OpenOption{estargz.WithTOCDigest(toc)}
	if tb != nil {
		opts = append(opts, estargz.WithTail(tb.Tail()))
	}
	if f.maxEntries > 0 {
		opts = append(opts, estargz.WithMaxEntries(f.maxEntries))
	}
	sr := io.NewSectionReader(b, 0, b.Size())
	idx, err := index.Decode(func(s layer.Sink) (layer.Info, error) {
		info, err := estargz.DecodeTOC(sr, s, opts...)
		return info.LayerInfo(), err
	})
	if tb != nil {
		tb.trimTail(mountTailSize)
	}
	if errors.Is(err, estargz.ErrFormat) {
		// the eStargz library's zstd:chunked layers carry an eStargz TOC
		// digest too, and it alone reaches us when labels name the layer
		if zidx, dec, zerr := (zstdChunkedFormat{maxEntries: f.maxEntries}).Open(ctx, b, toc); zerr == nil || errors.Is(zerr, zstdchunked.ErrVerify) {
			return zidx, dec, zerr
		}
	}
	if err != nil {
		return nil, nil, err
	}
	return idx, estargz.Decoder{}, nil
}
