package estargz_test

import (
	"archive/tar"
	"bytes"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"testing"

	"github.com/lazysnap/lazysnap/estargz"
	"github.com/opencontainers/go-digest"
)

// Seeds live in testdata/fuzz/<FuzzName>/ (go test's corpus format) and are
// regenerated with: LAZYSNAP_WRITE_SEEDS=1 go test ./estargz -run TestWriteFuzzSeeds

func FuzzParseFooter(f *testing.F) {
	f.Add(estargz.Footer(12345))
	f.Add(estargz.Footer(0))
	f.Fuzz(func(t *testing.T, tail []byte) {
		off, size, err := estargz.ParseFooter(tail)
		if err != nil {
			return
		}
		if off < 0 || (size != estargz.FooterSize && size != estargz.LegacyFooterSize) {
			t.Fatalf("ParseFooter accepted offset %d size %d", off, size)
		}
		// gzip header fields the format does not fix (MTIME, XFL, OS) may
		// differ, but the offset must round-trip through our own footer
		if again, _, err := estargz.ParseFooter(estargz.Footer(off)); err != nil || again != off {
			t.Fatalf("offset %d does not round-trip: %d, %v", off, again, err)
		}
	})
}

// checkReader reads every regular file of an opened blob: each read either
// fails or returns bytes that match their chunk digests.
func checkReader(t *testing.T, r *estargz.Reader) {
	for i := range r.TOC().Entries {
		e := &r.TOC().Entries[i]
		for j := range e.Chunks {
			c := &e.Chunks[j]
			if c.Size <= 0 || c.Offset < 0 || c.End > r.TOC().Offset || c.Offset >= c.End {
				t.Fatalf("accepted chunk %+v of %q", c, e.Name)
			}
			data, err := r.ReadChunk(t.Context(), c, nil)
			if err == nil && digest.FromBytes(data) != c.Digest {
				t.Fatalf("ReadChunk served unverified bytes")
			}
		}
	}
}

func FuzzOpen(f *testing.F) {
	for _, s := range fuzzBlobSeeds(f) {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, blob []byte) {
		r, err := estargz.Open(io.NewSectionReader(bytes.NewReader(blob), 0, int64(len(blob))), estargz.WithoutTOCVerification(), estargz.WithMaxTOCSize(1<<20))
		if err != nil {
			return
		}
		checkReader(t, r)
	})
}

// FuzzTOC fuzzes the TOC JSON alone, wrapped in a valid blob around one data
// member, which reaches the validator far more often than FuzzOpen.
func FuzzTOC(f *testing.F) {
	data := []byte("hello, world")
	dg := digest.FromBytes(data).String()
	off := len(gz([]byte("header member")))
	f.Add(tocOf(ent{"name": "a", "type": "reg", "size": len(data), "offset": off, "chunkDigest": dg}))
	f.Add(tocOf(ent{"name": "d/", "type": "dir"}, ent{"name": "d/l", "type": "hardlink", "linkName": "a"}))
	f.Add(tocOf(ent{"name": "a", "type": "reg", "size": 24, "offset": off, "chunkDigest": dg, "chunkSize": 12},
		ent{"name": "a", "type": "chunk", "offset": off, "innerOffset": 12, "chunkOffset": 12, "chunkDigest": dg}))
	f.Fuzz(func(t *testing.T, toc []byte) {
		blob, _, _ := blobWith(toc, gz(data))
		r, err := estargz.Open(sectionOf(blob), estargz.WithTOCDigest(digest.FromBytes(toc)))
		if err != nil {
			return
		}
		checkReader(t, r)
	})
}

func fuzzBlobSeeds(tb testing.TB) [][]byte {
	var tarBuf bytes.Buffer
	tw := tar.NewWriter(&tarBuf)
	for _, f := range []struct {
		h    tar.Header
		body string
	}{
		{tar.Header{Typeflag: tar.TypeDir, Name: "d/", Mode: 0o755}, ""},
		{tar.Header{Typeflag: tar.TypeReg, Name: "d/f", Mode: 0o644, Size: 40}, "0123456789012345678901234567890123456789"},
		{tar.Header{Typeflag: tar.TypeLink, Name: "d/l", Linkname: "d/f"}, ""},
		{tar.Header{Typeflag: tar.TypeSymlink, Name: "s", Linkname: "d/f"}, ""},
	} {
		tw.WriteHeader(&f.h)
		tw.Write([]byte(f.body))
	}
	tw.Close()
	small := tarBuf.Bytes()
	var out [][]byte
	for _, opts := range [][]estargz.ConvertOption{nil, {estargz.WithChunkSize(16)}} {
		blob, _ := convert(tb, small, opts...)
		out = append(out, blob)
	}
	return out
}

func TestWriteFuzzSeeds(t *testing.T) {
	if os.Getenv("LAZYSNAP_WRITE_SEEDS") == "" {
		t.Skip("set LAZYSNAP_WRITE_SEEDS=1 to regenerate testdata/fuzz")
	}
	write := func(fuzzer string, seeds ...[]byte) {
		dir := filepath.Join("testdata", "fuzz", fuzzer)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		for i, s := range seeds {
			body := fmt.Sprintf("go test fuzz v1\n[]byte(%s)\n", strconv.Quote(string(s)))
			if err := os.WriteFile(filepath.Join(dir, fmt.Sprintf("seed-%d", i)), []byte(body), 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	legacy := append([]byte{0x1f, 0x8b, 0x08, 0x04, 0, 0, 0, 0, 0, 0xff, 22, 0}, fmt.Sprintf("%016xSTARGZ", 99)...)
	legacy = append(legacy, 0x01, 0x00, 0x00, 0xff, 0xff, 0, 0, 0, 0, 0, 0, 0, 0)
	write("FuzzParseFooter", estargz.Footer(1<<20), legacy, []byte("short"))
	write("FuzzOpen", fuzzBlobSeeds(t)...)
	dg := digest.FromString("hello, world").String()
	write("FuzzTOC",
		tocOf(ent{"name": "../x", "type": "reg"}),
		tocOf(ent{"name": "a", "type": "reg", "size": 12, "offset": 31, "chunkDigest": dg}, ent{"name": "a", "type": "reg"}),
		[]byte(`{"version":1,"entries":[{"name":"a","type":"symlink","linkName":"/etc/passwd","xattrs":{"user.x":"AAEC"}}]}`))
}
