package estargz_test

import (
	"errors"
	"io"
	"testing"

	"github.com/lazysnap/lazysnap/estargz"
)

// failingReader yields the first n bytes of b, then fails once with err,
// then (as a retried request would) yields the rest.
type failingReader struct {
	b      []byte
	n      int
	err    error
	failed bool
}

func (r *failingReader) Read(p []byte) (int, error) {
	if len(r.b) == 0 {
		return 0, io.EOF
	}
	if r.n == 0 && !r.failed {
		r.failed = true
		return 0, r.err
	}
	k := len(p)
	if !r.failed {
		k = min(k, r.n)
	}
	k = copy(p, r.b[:min(k, len(r.b))])
	r.b, r.n = r.b[k:], r.n-k
	return k, nil
}

// TestReadErrorKeepsItsKind: a read of the TOC member that fails midway
// is returned as itself (a registry's timeout stays one), not as
// ErrFormat, even though the decoders above it saw a stream cut short,
// and the read is not resumed after it; bytes that end early are
// ErrFormat.
func TestReadErrorKeepsItsKind(t *testing.T) {
	blob, _ := convert(t, manyFiles(t, 2000))
	tocOff, footerSize, err := estargz.ParseFooter(blob[len(blob)-estargz.FooterSize:])
	if err != nil {
		t.Fatal(err)
	}
	member := blob[tocOff : len(blob)-footerSize]
	errTimeout := errors.New("registry timed out")
	for _, tc := range []struct {
		name    string
		r       io.Reader
		want    error
		notWant error
	}{
		{"fails in the gzip header", &failingReader{b: member, n: 4, err: errTimeout}, errTimeout, estargz.ErrFormat},
		{"fails in the JSON", &failingReader{b: member, n: len(member) / 2, err: errTimeout}, errTimeout, estargz.ErrFormat},
		{"ends early", io.LimitReader(&failingReader{b: member, n: len(member)}, int64(len(member)/2)), estargz.ErrFormat, errTimeout},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := estargz.ReadTOCMember(tc.r, estargz.DefaultMaxTOCSize)
			if !errors.Is(err, tc.want) || errors.Is(err, tc.notWant) {
				t.Fatalf("ReadTOCMember: %v, want %v and not %v", err, tc.want, tc.notWant)
			}
		})
	}
}
