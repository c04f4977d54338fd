package estargz_test

import (
	"bytes"
	"context"
	"io"
	"testing"

	"github.com/lazysnap/lazysnap/estargz"
	"github.com/lazysnap/lazysnap/internal/testformat"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// TestFormat runs the format conformance suite on eStargz layers.
func TestFormat(t *testing.T) {
	testformat.Run(t, testformat.Case{Format: estargz.Format{}, Make: func(t testing.TB, tarball []byte) testformat.Layer {
		var out bytes.Buffer
		res, err := estargz.Convert(context.Background(), &out, io.NewSectionReader(bytes.NewReader(tarball), 0, int64(len(tarball))), estargz.WithChunkSize(64<<10))
		if err != nil {
			t.Fatal(err)
		}
		return testformat.Layer{Blob: out.Bytes(), Desc: ocispec.Descriptor{MediaType: ocispec.MediaTypeImageLayerGzip,
			Digest: res.Digest, Size: res.Size, Annotations: res.Annotations}}
	}})
}
