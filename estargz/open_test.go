package estargz_test

import (
	"archive/tar"
	"bytes"
	"fmt"
	"io"
	"sync/atomic"
	"testing"

	"github.com/lazysnap/lazysnap/estargz"
)

// countingReaderAt counts ReadAt calls and bytes, as a remote blob would
// count range requests.
type countingReaderAt struct {
	r            io.ReaderAt
	calls, bytes atomic.Int64
}

func (c *countingReaderAt) ReadAt(p []byte, off int64) (int, error) {
	c.calls.Add(1)
	n, err := c.r.ReadAt(p, off)
	c.bytes.Add(int64(n))
	return n, err
}

// manyFiles is a tar of n small files, whose TOC grows with n.
func manyFiles(t testing.TB, n int) []byte {
	t.Helper()
	var b bytes.Buffer
	tw := tar.NewWriter(&b)
	for i := range n {
		content := []byte(fmt.Sprintf("file %d\n", i))
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: fmt.Sprintf("d%03d/f%05d", i%100, i), Mode: 0o644, Size: int64(len(content))}); err != nil {
			t.Fatal(err)
		}
		tw.Write(content)
	}
	tw.Close()
	return b.Bytes()
}

// TestOpenReadAtCalls: Open reads the footer and TOC with at most two
// ReadAt calls (one when the TOC fits the first tail read, none when it is
// given the tail), whatever the TOC's size.
func TestOpenReadAtCalls(t *testing.T) {
	small, smallRes := convert(t, manyFiles(t, 10))
	smallTOC := tocOffset(t, small, smallRes)
	big, bigRes := convert(t, manyFiles(t, 10000))
	bigTOC := tocOffset(t, big, bigRes)
	if toc := int64(len(big)) - bigTOC; toc < 4*estargz.DefaultTailReadSize {
		t.Fatalf("big blob's TOC is only %d bytes", toc)
	}
	tailOf := func(b []byte, n int) []byte { return b[len(b)-min(n, len(b)):] }
	for _, tc := range []struct {
		name      string
		blob      []byte
		res       *estargz.Result
		tocOff    int64
		opts      []estargz.OpenOption
		wantCalls int64
	}{
		{"small TOC, default tail read", small, smallRes, smallTOC, nil, 1},
		{"big TOC, default tail read", big, bigRes, bigTOC, nil, 2},
		{"big TOC, footer-sized tail read", big, bigRes, bigTOC, []estargz.OpenOption{estargz.WithTailReadSize(1)}, 2},
		{"big TOC, tail read covering it", big, bigRes, bigTOC, []estargz.OpenOption{estargz.WithTailReadSize(int64(len(big)))}, 1},
		{"small TOC, given the whole tail", small, smallRes, smallTOC, []estargz.OpenOption{estargz.WithTail(tailOf(small, 64<<10))}, 0},
		{"big TOC, given the footer", big, bigRes, bigTOC, []estargz.OpenOption{estargz.WithTail(tailOf(big, estargz.FooterSize))}, 1},
		{"big TOC, given part of it", big, bigRes, bigTOC, []estargz.OpenOption{estargz.WithTail(tailOf(big, 10000))}, 1},
		{"big TOC, given all of it", big, bigRes, bigTOC, []estargz.OpenOption{estargz.WithTail(big[bigTOC:])}, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cr := &countingReaderAt{r: bytes.NewReader(tc.blob)}
			opts := append([]estargz.OpenOption{estargz.WithTOCDigest(tc.res.TOCDigest)}, tc.opts...)
			r, err := estargz.Open(io.NewSectionReader(cr, 0, int64(len(tc.blob))), opts...)
			if err != nil {
				t.Fatal(err)
			}
			if got := cr.calls.Load(); got != tc.wantCalls {
				t.Errorf("%d ReadAt calls, want %d", got, tc.wantCalls)
			}
			tocBytes := int64(len(tc.blob)) - tc.tocOff
			if got := cr.bytes.Load(); got > max(tocBytes, estargz.DefaultTailReadSize) && len(tc.opts) == 0 {
				t.Errorf("read %d bytes for a %d-byte TOC and footer", got, tocBytes)
			}
			if r.TOCDigest() != tc.res.TOCDigest {
				t.Errorf("TOC digest %s, want %s", r.TOCDigest(), tc.res.TOCDigest)
			}
		})
	}
}

func tocOffset(t *testing.T, blob []byte, res *estargz.Result) int64 {
	t.Helper()
	r, err := estargz.Open(sectionOf(blob), estargz.WithTOCDigest(res.TOCDigest))
	if err != nil {
		t.Fatal(err)
	}
	return r.TOC().Offset
}

func TestOpenTailErrors(t *testing.T) {
	blob, res := convert(t, manyFiles(t, 10))
	for _, tc := range []struct {
		name string
		tail []byte
	}{
		{"longer than the blob", append([]byte{0}, blob...)},
		{"shorter than a footer", blob[len(blob)-10:]},
		{"not the blob's end", blob[len(blob)-200 : len(blob)-100]},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := estargz.Open(sectionOf(blob), estargz.WithTOCDigest(res.TOCDigest), estargz.WithTail(tc.tail))
			if err == nil {
				t.Fatal("Open succeeded")
			}
		})
	}
}

// TestOpenStreamsLargeTOC: a TOC region of more than 8 MiB (here a TOC
// member followed by junk up to the footer) is streamed in 4 MiB reads,
// not read into memory in one piece: Open reads the tail, then one 4 MiB
// read covers the member.
func TestOpenStreamsLargeTOC(t *testing.T) {
	blob, res := convert(t, manyFiles(t, 100))
	tocOff := tocOffset(t, blob, res)
	footer := blob[len(blob)-estargz.FooterSize:]
	big := append(append(append([]byte(nil), blob[:len(blob)-estargz.FooterSize]...), make([]byte, 9<<20)...), footer...)
	cr := &countingReaderAt{r: bytes.NewReader(big)}
	r, err := estargz.Open(io.NewSectionReader(cr, 0, int64(len(big))), estargz.WithTOCDigest(res.TOCDigest))
	if err != nil {
		t.Fatal(err)
	}
	if r.TOC().Offset != tocOff {
		t.Fatalf("TOC offset %d, want %d", r.TOC().Offset, tocOff)
	}
	if got, want := cr.calls.Load(), int64(2); got != want {
		t.Errorf("%d ReadAt calls, want %d", got, want)
	}
	if got := cr.bytes.Load(); got > estargz.DefaultTailReadSize+4<<20 {
		t.Errorf("read %d bytes, want at most the tail and one 4 MiB read", got)
	}
}
