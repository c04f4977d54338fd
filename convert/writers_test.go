package convert

import (
	"bytes"
	"compress/gzip"
	"errors"
	"io"
	"path/filepath"
	"slices"
	"testing"

	"github.com/klauspost/compress/zstd"
	"github.com/lazysnap/lazysnap/estargz"
	"github.com/lazysnap/lazysnap/internal/testformat"
	"github.com/lazysnap/lazysnap/layer"
	"github.com/lazysnap/lazysnap/soci/lazy"
	"github.com/lazysnap/lazysnap/zstdchunked"
)

// TestWritersRoundTrip: every writer of the list passes the writer suite
// (testformat.RunWriter): what it writes, its format's reader (as remote
// lists them) reads back as the tar it was written from.
func TestWritersRoundTrip(t *testing.T) {
	gunzip := func(b []byte) ([]byte, error) {
		zr, err := gzip.NewReader(bytes.NewReader(b))
		if err != nil {
			return nil, err
		}
		return io.ReadAll(zr)
	}
	unzstd := func(b []byte) ([]byte, error) {
		zr, err := zstd.NewReader(bytes.NewReader(b))
		if err != nil {
			return nil, err
		}
		defer zr.Close()
		return io.ReadAll(zr)
	}
	cases := map[string]testformat.WriterCase{
		FormatEStargz:     {Format: estargz.Format{}, Decompress: gunzip},
		FormatZstdChunked: {Format: zstdchunked.Format{}, Decompress: unzstd},
		FormatSOCI:        {Format: lazy.Format{}, IndexAnnotation: lazy.AnnotationZtocDigest},
	}
	ws := writers()
	if len(ws) != len(cases) {
		t.Errorf("%d writers, cases for %d", len(ws), len(cases))
	}
	for _, w := range ws {
		t.Run(w.Name(), func(t *testing.T) {
			c, ok := cases[w.Name()]
			if !ok {
				t.Fatalf("no case for the writer %q", w.Name())
			}
			if got, err := writerNamed(w.Name(), w.Input()); err != nil || got != w {
				t.Fatalf("writerNamed(%q): %v, %v", w.Name(), got, err)
			}
			c.Writer = w
			testformat.RunWriter(t, c)
		})
	}
}

// TestUnknownFormat: Image writes only the formats whose writers read a
// layer's tar, IndexImage only those that read its blob; any other name
// is ErrFormat, before anything is read.
func TestUnknownFormat(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "missing")
	for _, tc := range []struct {
		name string
		run  func() error
	}{
		{"Image soci", func() error {
			_, err := Image(t.Context(), missing, missing+"-out", Options{Format: FormatSOCI})
			return err
		}},
		{"Image zstd", func() error {
			_, err := Image(t.Context(), missing, missing+"-out", Options{Format: "zstd"})
			return err
		}},
		{"IndexImage estargz", func() error {
			_, err := IndexImage(t.Context(), missing, missing+"-out", IndexOptions{Format: FormatEStargz})
			return err
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := tc.run(); !errors.Is(err, ErrFormat) {
				t.Fatalf("error %v, want ErrFormat", err)
			}
		})
	}
	if got := Formats(layer.InputTar); !slices.Equal(got, []string{FormatEStargz, FormatZstdChunked}) {
		t.Errorf("Formats(InputTar) = %q", got)
	}
}
