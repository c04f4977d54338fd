package remote

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/lazysnap/lazysnap/estargz"
	"github.com/lazysnap/lazysnap/fetcher"
	"github.com/lazysnap/lazysnap/index"
	"github.com/lazysnap/lazysnap/layer"
	"github.com/lazysnap/lazysnap/snapshotter"
	"github.com/lazysnap/lazysnap/soci/lazy"
	"github.com/lazysnap/lazysnap/zstdchunked"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// Format is one lazily loadable layer format (layer.Format, where its
// contract and optional capabilities are declared). A new format is one
// more implementation, listed in formats.
type Format = layer.Format

// fallbackReason gives an error of a Format's Open the snapshotter.Reason
// its layer falls back with, keeping the error (%w) so that its kind
// survives: the one mapping from the formats' errors to reasons. The
// blob's errors come first, whatever else the error wraps: a registry
// that timed out is ReasonTimeout (the layer may well be lazy, it was not
// read), its other errors carry no Reason (the snapshotter counts a
// mount error). Bytes that do not match the digest vouching for them are
// ReasonVerification (layer.ErrVerify); bytes that are no valid layer of
// the format, or past a cap, ReasonNotLazy (layer.ErrNotLazy): each
// format's sentinels are one of those kinds (layer.Sentinel), so that no
// format is named here. An error that carries a Reason keeps it.
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
	case is(fetcher.ErrDigestMismatch, layer.ErrVerify):
		return fmt.Errorf("%w: %w", snapshotter.ReasonVerification, err)
	case is(layer.ErrNotLazy): // formats' and index's sentinels (layer.Sentinel)
		return fmt.Errorf("%w: %w", snapshotter.ReasonNotLazy, err)
	}
	return err
}

// formats are the formats Mount tries, in order: the only place that
// knows them all. maxEntries caps a layer's index (0: each format's
// default).
func formats(maxEntries int, mem *index.Budget) []Format {
	return []Format{
		estargz.Format{MaxEntries: maxEntries},
		zstdchunked.Format{MaxEntries: maxEntries},
		lazy.Format{MaxEntries: maxEntries, Memory: mem},
	}
}

// claim is a format that claims a layer, with the digest its index is
// verified against.
type claim struct {
	f Format
	d digest.Digest
}

// pickFormat returns the formats that claim the layer desc describes, in
// the order of formats, each with the digest its index is verified
// against: the first whose Open does not find the blob another format's
// reads it. Only formats that verify the index against the first one's
// digest are listed (the layer's local state is keyed by it).
func pickFormat(desc ocispec.Descriptor, maxEntries int, mem *index.Budget) ([]claim, error) {
	var cs []claim
	for _, f := range formats(maxEntries, mem) {
		d, ok, err := f.IndexDigest(desc)
		if err != nil && len(cs) == 0 {
			return nil, fmt.Errorf("layer %s: %w", desc.Digest, fallbackReason(err))
		}
		if ok && err == nil && (len(cs) == 0 || d == cs[0].d) {
			cs = append(cs, claim{f, d})
		}
	}
	if len(cs) > 0 {
		return cs, nil
	}
	soci := ""
	if why, ok := desc.Annotations[annSociNone]; ok {
		soci = "; no SOCI zTOC: " + why
	}
	var names []string
	for _, f := range formats(0, nil) {
		names = append(names, f.Name())
	}
	return nil, fmt.Errorf("%w: layer %s (%s) is in no lazily loadable format (its annotations name no index of %s%s)",
		snapshotter.ReasonNotLazy, desc.Digest, desc.MediaType, strings.Join(names, ", "), soci)
}

// openIndex reads the layer's index from b with the first of cs whose
// Open does not find the blob another format's, and returns it with the
// layer's Decoder and the format's name. When every format finds the
// blob another's, the first one's error is returned.
func openIndex(ctx context.Context, b Blob, cs []claim) (*index.Index, layer.Decoder, string, error) {
	var first error
	for _, c := range cs {
		var idx *index.Index
		build := func(decode func(layer.Sink) (layer.Info, error)) (layer.Index, error) {
			x, err := index.Decode(decode)
			idx = x
			return x, err
		}
		dec, err := c.f.Open(ctx, b, c.d, build)
		if err == nil && idx == nil {
			err = fmt.Errorf("%w: format %s built no index", layer.ErrInvalid, c.f.Name())
		}
		if err == nil {
			return idx, dec, c.f.Name(), nil
		}
		if first == nil {
			first = err
		}
		if !errors.Is(err, layer.ErrOtherFormat) {
			return nil, nil, "", err
		}
	}
	return nil, nil, "", first
}

// unknownMediaType is the media type of a layer known by its labels alone
// (a layer read ahead, or described by its labels), which they do not
// give: no format is picked by media type.
const unknownMediaType = "application/octet-stream"

// descriptorFromLabels is the layer's descriptor when the labels carry
// what its format needs, so that Mount need not read the manifest: the
// layer annotations containerd passes as labels (LabelTOCDigest is
// eStargz's TOC digest annotation), when a format claims them. Its media
// type is not among them.
func descriptorFromLabels(src snapshotter.LayerSource) (ocispec.Descriptor, bool) {
	if src.TOCDigest == "" {
		return ocispec.Descriptor{}, false
	}
	d := ocispec.Descriptor{MediaType: unknownMediaType, Digest: src.Digest,
		Annotations: map[string]string{snapshotter.LabelTOCDigest: src.TOCDigest.String()}}
	if src.TailSize > 0 {
		d.Annotations[snapshotter.LabelTailSize] = strconv.FormatInt(src.TailSize, 10)
	}
	_, err := pickFormat(d, 0, nil)
	return d, err == nil
}
