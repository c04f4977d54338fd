package estargz_test

import (
	"archive/tar"
	"bytes"
	"context"
	"fmt"
	"io"
	"slices"
	"testing"

	"github.com/lazysnap/lazysnap/estargz"
)

// TestTailSizeAnnotation: the converted layer's tail-size annotation is
// the bytes from the TOC's start to the blob's end, for every TOC size,
// and the Writer lists it among its annotations (a converter drops it
// from a layer converted again).
func TestTailSizeAnnotation(t *testing.T) {
	if !slices.Contains(estargz.Writer{}.Annotations(), estargz.TailSizeAnnotation) {
		t.Errorf("Writer.Annotations lacks %s", estargz.TailSizeAnnotation)
	}
	for _, tc := range []struct {
		name  string
		files int
	}{{"one file", 1}, {"TOC past 64 KiB", 3000}} {
		t.Run(tc.name, func(t *testing.T) {
			var in bytes.Buffer
			tw := tar.NewWriter(&in)
			for i := range tc.files {
				body := fmt.Sprintf("file %d\n", i)
				tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: fmt.Sprintf("d/f%05d", i), Mode: 0o644, Size: int64(len(body))})
				tw.Write([]byte(body))
			}
			tw.Close()
			var out bytes.Buffer
			res, err := estargz.Convert(context.Background(), &out, io.NewSectionReader(bytes.NewReader(in.Bytes()), 0, int64(in.Len())))
			if err != nil {
				t.Fatal(err)
			}
			blob := out.Bytes()
			off, _, err := estargz.ParseFooter(blob[len(blob)-estargz.FooterSize:])
			if err != nil {
				t.Fatal(err)
			}
			if got, want := res.Annotations[estargz.TailSizeAnnotation], fmt.Sprint(int64(len(blob))-off); got != want {
				t.Errorf("%s = %q, want %s", estargz.TailSizeAnnotation, got, want)
			}
		})
	}
}
