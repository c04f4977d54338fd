package soci

import (
	"bufio"
	"context"
	"fmt"
	"io"

	"github.com/lazysnap/lazysnap/layer"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// dockerLayerGzip is Docker's media type of a gzip layer.
const dockerLayerGzip = "application/vnd.docker.image.rootfs.diff.tar.gzip"

// Writer writes SOCI zTOCs (layer.Writer): a gzip layer's blob, as it
// is, indexed by Build; the layer stays, and the zTOC is stored beside
// it (in a SOCI index, IndexManifest).
type Writer struct{}

var _ layer.Writer = Writer{}

// Name implements layer.Writer.
func (Writer) Name() string { return "soci" }

// Input implements layer.Writer: the layer's blob.
func (Writer) Input() layer.Input { return layer.InputBlob }

// Skip implements layer.Writer: only gzip layers are indexed.
func (Writer) Skip(desc ocispec.Descriptor) string {
	if desc.MediaType != ocispec.MediaTypeImageLayerGzip && desc.MediaType != dockerLayerGzip {
		return "not a gzip layer (" + desc.MediaType + ")"
	}
	return ""
}

// Annotations implements layer.Writer: a zTOC's annotations are on its
// descriptor in the SOCI index, none on the layer.
func (Writer) Annotations() []string { return nil }

// Write implements layer.Writer: the zTOC of the gzip blob src (of the
// layer desc), with opts' span size (ChunkSize) and build tool. Its
// descriptor (Written.Desc) is ZtocDescriptor's. The gzip stream must
// span the whole blob (ErrFormat).
func (Writer) Write(ctx context.Context, dst io.Writer, src *io.SectionReader, desc ocispec.Descriptor, opts layer.WriteOptions) (*layer.Written, error) {
	span := opts.ChunkSize
	if span <= 0 {
		span = DefaultSpanSize
	}
	z, err := Build(bufio.NewReaderSize(ctxReader{ctx, src}, 1<<20), BuildOptions{SpanSize: span, BuildTool: opts.BuildTool})
	if err != nil {
		return nil, err
	}
	if z.CompressedSize != src.Size() {
		return nil, fmt.Errorf("%w: the gzip stream ends at byte %d of the blob's %d", ErrFormat, z.CompressedSize, src.Size())
	}
	zb := Marshal(z)
	if _, err := dst.Write(zb); err != nil {
		return nil, err
	}
	sd := ZtocDescriptor(zb, Descriptor{MediaType: desc.MediaType, Digest: desc.Digest}, span)
	return &layer.Written{
		Desc:             ocispec.Descriptor{MediaType: sd.MediaType, Digest: sd.Digest, Size: sd.Size, Annotations: sd.Annotations},
		UncompressedSize: z.UncompressedSize,
		TOCDigest:        sd.Digest,
		Files:            len(z.Files),
		Chunks:           len(z.SpanDigests),
	}, nil
}

// ctxReader is r that ends when ctx does.
type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}
