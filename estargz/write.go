package estargz

import (
	"context"
	"io"
	"maps"
	"strconv"

	"github.com/lazysnap/lazysnap/layer"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// Writer writes eStargz layers (layer.Writer): a layer's tar converted
// by Convert into a gzip blob, annotated with its TOC digest and
// uncompressed size.
type Writer struct{}

var _ layer.Writer = Writer{}

// Name implements layer.Writer.
func (Writer) Name() string { return Format{}.Name() }

// Input implements layer.Writer: the layer's tar.
func (Writer) Input() layer.Input { return layer.InputTar }

// Skip implements layer.Writer: a layer with a TOC digest annotation is
// eStargz already.
func (Writer) Skip(desc ocispec.Descriptor) string {
	if _, ok := desc.Annotations[TOCJSONDigestAnnotation]; ok {
		return "already eStargz"
	}
	return ""
}

// Annotations implements layer.Writer.
func (Writer) Annotations() []string {
	return []string{TOCJSONDigestAnnotation, TailSizeAnnotation, UncompressedSizeAnnotation}
}

// Write implements layer.Writer: Convert, with opts' chunk size, gzip
// level and prioritized files.
func (Writer) Write(ctx context.Context, dst io.Writer, src *io.SectionReader, _ ocispec.Descriptor, opts layer.WriteOptions) (*layer.Written, error) {
	copts := WriteConvertOptions(opts)
	if opts.Level > 0 {
		copts = append(copts, WithCompressionLevel(opts.Level))
	}
	res, err := Convert(ctx, dst, src, copts...)
	if err != nil {
		return nil, err
	}
	w := res.Written(ocispec.MediaTypeImageLayerGzip)
	if w.Desc.Annotations == nil {
		w.Desc.Annotations = map[string]string{}
	}
	w.Desc.Annotations[UncompressedSizeAnnotation] = strconv.FormatInt(res.UncompressedSize, 10)
	return w, nil
}

// WriteConvertOptions are Convert's options for opts' chunk size and
// prioritized files (a Writer over Convert adds its compression).
func WriteConvertOptions(opts layer.WriteOptions) []ConvertOption {
	var copts []ConvertOption
	if opts.ChunkSize > 0 {
		copts = append(copts, WithChunkSize(opts.ChunkSize))
	}
	if len(opts.Prioritized) > 0 {
		copts = append(copts, WithPrioritizedFiles(opts.Prioritized))
	}
	return copts
}

// Written describes the blob r describes as a layer of mediaType.
func (r *Result) Written(mediaType string) *layer.Written {
	return &layer.Written{
		Desc:               ocispec.Descriptor{MediaType: mediaType, Digest: r.Digest, Size: r.Size, Annotations: maps.Clone(r.Annotations)},
		DiffID:             r.DiffID,
		UncompressedSize:   r.UncompressedSize,
		TOCDigest:          r.TOCDigest,
		MissingPrioritized: r.MissingPrioritized,
	}
}
