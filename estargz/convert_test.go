package estargz_test

import (
	"archive/tar"
	"bytes"
	"errors"
	"io"
	"runtime"
	"testing"

	"github.com/lazysnap/lazysnap/estargz"
	"github.com/lazysnap/lazysnap/internal/testtar"
	"github.com/opencontainers/go-digest"
)

// TestConvertConcurrency: the blob does not depend on how many workers
// compress it (the writer suite, TestWriter, writes with the default).
func TestConvertConcurrency(t *testing.T) {
	tarball := testtar.Synthetic(1 << 20)
	opts := []estargz.ConvertOption{estargz.WithChunkSize(64 << 10)}
	want, _ := convert(t, tarball, opts...)
	got, res := convert(t, tarball, append(opts, estargz.WithConcurrency(1))...)
	if !bytes.Equal(got, want) {
		t.Fatalf("one worker wrote %d bytes of %s, %d workers %d bytes of %s", len(got), res.Digest, runtime.GOMAXPROCS(0), len(want), digest.FromBytes(want))
	}
}

func TestConvertRejectsBadTar(t *testing.T) {
	mk := func(hs ...tar.Header) []byte {
		var b bytes.Buffer
		tw := tar.NewWriter(&b)
		for _, h := range hs {
			if err := tw.WriteHeader(&h); err != nil {
				t.Fatal(err)
			}
		}
		tw.Close()
		return b.Bytes()
	}
	for _, tc := range []struct {
		name  string
		tar   []byte
		wants error
	}{
		{"absolute name", mk(tar.Header{Typeflag: tar.TypeReg, Name: "/etc/passwd"}), estargz.ErrFormat},
		{"dotdot name", mk(tar.Header{Typeflag: tar.TypeReg, Name: "a/../../etc/passwd"}), estargz.ErrFormat},
		{"dangling hardlink", mk(tar.Header{Typeflag: tar.TypeLink, Name: "a", Linkname: "nope"}), estargz.ErrFormat},
		{"hardlink to dir", mk(tar.Header{Typeflag: tar.TypeDir, Name: "d/"}, tar.Header{Typeflag: tar.TypeLink, Name: "a", Linkname: "d"}), estargz.ErrFormat},
		{"hardlink cycle", mk(tar.Header{Typeflag: tar.TypeLink, Name: "a", Linkname: "b"}, tar.Header{Typeflag: tar.TypeLink, Name: "b", Linkname: "a"}), estargz.ErrFormat},
		{"truncated", mk(tar.Header{Typeflag: tar.TypeReg, Name: "a", Size: 0})[:100], estargz.ErrFormat},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := estargz.Convert(t.Context(), io.Discard, sectionOf(tc.tar))
			if !errors.Is(err, tc.wants) {
				t.Fatalf("Convert error %v, want %v", err, tc.wants)
			}
		})
	}
}

func TestConvertDuplicateLaterWins(t *testing.T) {
	var b bytes.Buffer
	tw := tar.NewWriter(&b)
	for _, c := range []string{"first", "second"} {
		tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: "f", Size: int64(len(c)), Mode: 0o644})
		tw.Write([]byte(c))
	}
	tw.Close()
	blob, res := convert(t, b.Bytes())
	r, err := estargz.Open(sectionOf(blob), estargz.WithTOCDigest(res.TOCDigest))
	if err != nil {
		t.Fatal(err)
	}
	f, err := r.OpenFile("f")
	if err != nil {
		t.Fatal(err)
	}
	got, _ := io.ReadAll(io.NewSectionReader(f, 0, f.Size()))
	if string(got) != "second" {
		t.Fatalf("content %q, want the later entry's", got)
	}
}
