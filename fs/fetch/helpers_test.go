package fetch

import (
	"bytes"
	"context"
	"io"
	"testing"

	"github.com/lazysnap/lazysnap/estargz"
	"github.com/lazysnap/lazysnap/index"
	"github.com/lazysnap/lazysnap/internal/testtar"
)

// syntheticLayer converts a synthetic 1 MiB tar to eStargz and returns
// its index and blob bytes (with opts), for a layer over a test
// BlobReader.
func syntheticLayer(t *testing.T, opts ...estargz.ConvertOption) (*index.Index, []byte) {
	t.Helper()
	return indexedLayer(t, testtar.Synthetic(1<<20), opts...)
}

// indexedLayer converts a tar to eStargz and returns its index and blob
// bytes.
func indexedLayer(t *testing.T, tarball []byte, opts ...estargz.ConvertOption) (*index.Index, []byte) {
	t.Helper()
	var out bytes.Buffer
	res, err := estargz.Convert(context.Background(), &out, io.NewSectionReader(bytes.NewReader(tarball), 0, int64(len(tarball))), opts...)
	if err != nil {
		t.Fatal(err)
	}
	r, err := estargz.Open(io.NewSectionReader(bytes.NewReader(out.Bytes()), 0, int64(out.Len())), estargz.WithTOCDigest(res.TOCDigest))
	if err != nil {
		t.Fatal(err)
	}
	x, err := index.Build(r.TOC().Entries, r.TOC().LayerInfo())
	if err != nil {
		t.Fatal(err)
	}
	return x, out.Bytes()
}
