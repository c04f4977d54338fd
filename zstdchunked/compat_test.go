package zstdchunked_test

// Interoperability with the eStargz library's zstdchunked package
// (github.com/containerd/stargz-snapshotter/estargz/zstdchunked), an oracle
// only: what it writes opens and verifies here (that what we write opens
// and verifies there is TestWriter's).

import (
	"io"
	"testing"

	refestargz "github.com/containerd/stargz-snapshotter/estargz"
	refzstd "github.com/containerd/stargz-snapshotter/estargz/zstdchunked"
	"github.com/klauspost/compress/zstd"
	"github.com/lazysnap/lazysnap/estargz"
	"github.com/lazysnap/lazysnap/internal/testformat"
	"github.com/lazysnap/lazysnap/internal/testtar"
	"github.com/lazysnap/lazysnap/zstdchunked"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// TestWeOpenReferenceBlobs: blobs the library's zstdchunked writer makes
// (the legacy layout, eStargz TOC entries without endOffset) read back
// through Format (testformat.RunReference), and decode here verified
// against its manifest-checksum and against its eStargz TOC digest, read
// as the source has them.
func TestWeOpenReferenceBlobs(t *testing.T) {
	testformat.RunReference(t, testformat.ReferenceCase{Format: zstdchunked.Format{},
		Build: func(t *testing.T, tarball []byte, opts []refestargz.Option) ([]byte, ocispec.Descriptor) {
			ann := map[string]string{}
			comp := struct {
				*refzstd.Compressor
				*refzstd.Decompressor
			}{&refzstd.Compressor{CompressionLevel: zstd.SpeedDefault, Metadata: ann}, new(refzstd.Decompressor)}
			b, err := refestargz.Build(sectionOf(tarball), append(opts, refestargz.WithCompression(comp))...)
			if err != nil {
				t.Fatal(err)
			}
			blob, err := io.ReadAll(b)
			if err != nil {
				t.Fatal(err)
			}
			ann[estargz.TOCJSONDigestAnnotation] = b.TOCDigest().String()
			return blob, ocispec.Descriptor{MediaType: ocispec.MediaTypeImageLayerZstd, Digest: digest.FromBytes(blob), Size: int64(len(blob)), Annotations: ann}
		},
		Check: func(t *testing.T, blob []byte, desc ocispec.Descriptor, src map[string]*testtar.Entry) {
			d, ok, err := zstdchunked.ManifestDigest(desc.Annotations)
			if !ok || err != nil {
				t.Fatalf("annotations %v: %v", desc.Annotations, err)
			}
			for _, dg := range []digest.Digest{d, digest.Digest(desc.Annotations[estargz.TOCJSONDigestAnnotation])} {
				c, f, err := decode(blob, dg)
				if err != nil {
					t.Fatalf("verified against %s: %v", dg, err)
				}
				if !f.Legacy {
					t.Errorf("footer %+v, want legacy", f)
				}
				checkContents(t, blob, c, src)
			}
		}})
}
