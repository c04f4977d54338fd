package lazy_test

import (
	"strconv"
	"testing"

	"github.com/lazysnap/lazysnap/internal/testformat"
	"github.com/lazysnap/lazysnap/soci"
	"github.com/lazysnap/lazysnap/soci/lazy"
)

// TestFormat runs the format conformance suite on gzip layers with SOCI
// zTOCs.
func TestFormat(t *testing.T) {
	testformat.Run(t, testformat.Case{Format: lazy.Format{}, Writer: soci.Writer{}, IndexAnnotation: lazy.AnnotationZtocDigest})
}

// TestWriter runs the writer suite on soci.Writer (an index of the gzip
// blob, read back through this format), and checks that Written counts
// the zTOC's files and spans and that the zTOC is of the whole blob.
func TestWriter(t *testing.T) {
	testformat.RunWriter(t, testformat.WriterCase{Writer: soci.Writer{}, Format: lazy.Format{}, IndexAnnotation: lazy.AnnotationZtocDigest,
		Check: func(t *testing.T, w testformat.Wrote) {
			z, err := soci.Unmarshal(w.Out, 0)
			if err != nil {
				t.Fatal(err)
			}
			if w.Written.Files != len(z.Files) || w.Written.Chunks != len(z.SpanDigests) || w.Written.UncompressedSize != z.UncompressedSize {
				t.Errorf("Written: %d files, %d spans, %d bytes; the zTOC has %d, %d, %d",
					w.Written.Files, w.Written.Chunks, w.Written.UncompressedSize, len(z.Files), len(z.SpanDigests), z.UncompressedSize)
			}
			span := w.Opts.ChunkSize
			if span == 0 {
				span = soci.DefaultSpanSize
			}
			if got := w.Written.Desc.Annotations[soci.AnnotationSpanSize]; got != strconv.FormatInt(span, 10) {
				t.Errorf("span size annotation %q, want %d", got, span)
			}
		}})
}
