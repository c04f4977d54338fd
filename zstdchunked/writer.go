package zstdchunked

import (
	"bytes"
	"context"
	"fmt"
	"io"

	"github.com/klauspost/compress/zstd"
	"github.com/lazysnap/lazysnap/estargz"
	"github.com/lazysnap/lazysnap/layer"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// DefaultLevel is the zstd level Convert compresses at: klauspost's
// default (about zstd level 3).
const DefaultLevel = zstd.SpeedDefault

// Compression writes zstd:chunked with estargz.Convert: every member a
// zstd frame, then a frame with the tar trailer, the TOC as a skippable
// frame and the legacy layout's footer, the layout that every reader
// knows (podman and skopeo of any version, the eStargz library). It
// writes no tar-split. Safe for concurrent use.
type Compression struct {
	enc *zstd.Encoder
}

var _ estargz.Compression = (*Compression)(nil)

// NewCompression returns a Compression at level.
func NewCompression(level zstd.EncoderLevel) (*Compression, error) {
	enc, err := zstd.NewWriter(nil, zstd.WithEncoderLevel(level))
	if err != nil {
		return nil, fmt.Errorf("zstdchunked: %w", err)
	}
	return &Compression{enc: enc}, nil
}

// Compress implements estargz.Compression: raw as one zstd frame.
func (c *Compression) Compress(dst *bytes.Buffer, raw []byte) error {
	out := c.enc.EncodeAll(raw, dst.AvailableBuffer())
	_, err := dst.Write(out)
	return err
}

// End implements estargz.Compression. The TOC digest it gives is the
// sha256 of the compressed TOC, the manifest-checksum, and the
// annotations are those of both layouts' names, so that readers of either
// find the TOC without reading the footer.
func (c *Compression) End(off int64, toc, trailer []byte) (*estargz.Ending, error) {
	blob := c.enc.EncodeAll(trailer, nil)
	ztoc := c.enc.EncodeAll(toc, nil)
	f := Footer{Offset: off + int64(len(blob)) + skippableHeaderSize, Size: int64(len(ztoc)), RawSize: int64(len(toc)), Legacy: true}
	blob = AppendSkippable(blob, ztoc)
	blob = f.Append(blob)
	d := digest.SHA256.FromBytes(ztoc)
	pos := Position{Offset: f.Offset, Size: f.Size, RawSize: f.RawSize}.String()
	return &estargz.Ending{Raw: trailer, Blob: blob, TOCDigest: d, Annotations: map[string]string{
		ManifestChecksumAnnotation:       d.String(),
		ManifestPositionAnnotation:       pos,
		LegacyManifestChecksumAnnotation: d.String(),
		LegacyManifestPositionAnnotation: pos,
	}}, nil
}

// Convert reads the uncompressed tar in src and writes it to dst as a
// zstd:chunked blob at level, with estargz.Convert's options (chunk size,
// prioritized files; WithCompressionLevel does not apply). The Result's
// Annotations are the layer's.
func Convert(ctx context.Context, dst io.Writer, src *io.SectionReader, level zstd.EncoderLevel, opts ...estargz.ConvertOption) (*estargz.Result, error) {
	c, err := NewCompression(level)
	if err != nil {
		return nil, err
	}
	defer c.enc.Close()
	return estargz.Convert(ctx, dst, src, append(opts, estargz.WithCompression(c), estargz.WithEndOffsets())...)
}

// Writer writes zstd:chunked layers (layer.Writer): a layer's tar
// converted by Convert into a zstd blob, annotated with its manifest's
// checksum and position (both layouts' names).
type Writer struct{}

var _ layer.Writer = Writer{}

// Name implements layer.Writer.
func (Writer) Name() string { return Format{}.Name() }

// Input implements layer.Writer: the layer's tar.
func (Writer) Input() layer.Input { return layer.InputTar }

// Skip implements layer.Writer: a zstd layer with a manifest checksum
// annotation is zstd:chunked already.
func (Writer) Skip(desc ocispec.Descriptor) string {
	if _, ok, _ := ManifestDigest(desc.Annotations); ok && desc.MediaType == ocispec.MediaTypeImageLayerZstd {
		return "already zstd:chunked"
	}
	return ""
}

// Annotations implements layer.Writer.
func (Writer) Annotations() []string {
	return []string{ManifestChecksumAnnotation, ManifestPositionAnnotation, TarSplitPositionAnnotation,
		LegacyManifestChecksumAnnotation, LegacyManifestPositionAnnotation}
}

// Write implements layer.Writer: Convert, with opts' chunk size,
// prioritized files and zstd level (DefaultLevel if 0).
func (Writer) Write(ctx context.Context, dst io.Writer, src *io.SectionReader, _ ocispec.Descriptor, opts layer.WriteOptions) (*layer.Written, error) {
	level := DefaultLevel
	if opts.Level > 0 {
		level = zstd.EncoderLevelFromZstd(opts.Level)
	}
	res, err := Convert(ctx, dst, src, level, estargz.WriteConvertOptions(opts)...)
	if err != nil {
		return nil, err
	}
	return res.Written(ocispec.MediaTypeImageLayerZstd), nil
}
