package lazy_test

import (
	"bytes"
	"compress/gzip"
	"testing"

	"github.com/lazysnap/lazysnap/internal/testformat"
	"github.com/lazysnap/lazysnap/soci"
	"github.com/lazysnap/lazysnap/soci/lazy"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// TestFormat runs the format conformance suite on gzip layers with SOCI
// zTOCs.
func TestFormat(t *testing.T) {
	testformat.Run(t, testformat.Case{Format: lazy.Format{}, Make: func(t testing.TB, tarball []byte) testformat.Layer {
		var out bytes.Buffer
		gz := gzip.NewWriter(&out)
		gz.Write(tarball)
		gz.Close()
		blob := out.Bytes()
		z, err := soci.Build(bytes.NewReader(blob), soci.BuildOptions{SpanSize: 64 << 10})
		if err != nil {
			t.Fatal(err)
		}
		raw := soci.Marshal(z)
		zd := digest.FromBytes(raw)
		return testformat.Layer{Blob: blob, Artifacts: map[digest.Digest][]byte{zd: raw},
			Desc: ocispec.Descriptor{MediaType: ocispec.MediaTypeImageLayerGzip, Digest: digest.FromBytes(blob), Size: int64(len(blob)),
				Annotations: map[string]string{lazy.AnnotationZtocDigest: zd.String()}}}
	}})
}
