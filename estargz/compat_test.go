package estargz_test

// Byte compatibility with the reference implementation,
// github.com/containerd/stargz-snapshotter/estargz, used here as an oracle
// only: blobs it writes must open and verify here (that blobs we write
// open and verify there is TestWriter's, testformat.ReferenceReads).

import (
	"bytes"
	"io"
	"testing"

	refestargz "github.com/containerd/stargz-snapshotter/estargz"
	"github.com/lazysnap/lazysnap/estargz"
	"github.com/lazysnap/lazysnap/internal/testformat"
	"github.com/lazysnap/lazysnap/internal/testtar"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// TestWeOpenReferenceBlobs: blobs the reference library writes read
// back through Format (testformat.RunReference) and through Reader, every
// entry as the tar has it, and their footer is the one Footer writes.
func TestWeOpenReferenceBlobs(t *testing.T) {
	testformat.RunReference(t, testformat.ReferenceCase{Format: estargz.Format{},
		Build: func(t *testing.T, tarball []byte, opts []refestargz.Option) ([]byte, ocispec.Descriptor) {
			b, err := refestargz.Build(sectionOf(tarball), opts...)
			if err != nil {
				t.Fatal(err)
			}
			blob, err := io.ReadAll(b)
			if err != nil {
				t.Fatal(err)
			}
			return blob, ocispec.Descriptor{MediaType: ocispec.MediaTypeImageLayerGzip, Digest: digest.FromBytes(blob), Size: int64(len(blob)),
				Annotations: map[string]string{estargz.TOCJSONDigestAnnotation: b.TOCDigest().String()}}
		},
		Check: func(t *testing.T, blob []byte, desc ocispec.Descriptor, src map[string]*testtar.Entry) {
			r, err := estargz.Open(sectionOf(blob), estargz.WithTOCDigest(digest.Digest(desc.Annotations[estargz.TOCJSONDigestAnnotation])))
			if err != nil {
				t.Fatalf("Open: %v", err)
			}
			compareWithSource(t, r, src)
			off, size, err := estargz.ParseFooter(blob[len(blob)-estargz.FooterSize:])
			if err != nil || size != estargz.FooterSize {
				t.Fatalf("ParseFooter: %v", err)
			}
			if got := estargz.Footer(off); !bytes.Equal(got, blob[len(blob)-estargz.FooterSize:]) {
				t.Errorf("our footer %x differs from the reference's %x", got, blob[len(blob)-estargz.FooterSize:])
			}
			if off != r.TOC().Offset {
				t.Errorf("TOC offset %d, footer says %d", r.TOC().Offset, off)
			}
		}})
}
