package zstdchunked_test

import (
	"testing"

	"github.com/lazysnap/lazysnap/estargz"
	"github.com/lazysnap/lazysnap/internal/testformat"
	"github.com/lazysnap/lazysnap/zstdchunked"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// TestFormat runs the format conformance suite on zstd:chunked layers.
func TestFormat(t *testing.T) {
	testformat.Run(t, testformat.Case{Format: zstdchunked.Format{}, Make: func(t testing.TB, tarball []byte) testformat.Layer {
		blob, res := convert(t, tarball, estargz.WithChunkSize(64<<10))
		return testformat.Layer{Blob: blob, Desc: ocispec.Descriptor{MediaType: ocispec.MediaTypeImageLayerZstd,
			Digest: res.Digest, Size: res.Size, Annotations: res.Annotations}}
	}})
}
