package soci_test

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"errors"
	"io"
	"math/rand/v2"
	"reflect"
	"testing"
	"time"

	"github.com/lazysnap/lazysnap/soci"
	"github.com/lazysnap/lazysnap/zran"
	"github.com/opencontainers/go-digest"
)

// testFile is one entry of a generated layer.
type testFile struct {
	name string
	typ  byte
	data []byte
	link string
}

// makeLayer writes the files as a gzip tar.
func makeLayer(t testing.TB, files []testFile) []byte {
	t.Helper()
	var buf bytes.Buffer
	gz, _ := gzip.NewWriterLevel(&buf, gzip.BestSpeed)
	tw := tar.NewWriter(gz)
	for _, f := range files {
		h := &tar.Header{Name: f.name, Typeflag: f.typ, Mode: 0o644, Size: int64(len(f.data)), Linkname: f.link,
			ModTime: time.Unix(1700000000, 5), Uid: 1, Gid: 2, Uname: "u", Gname: "g", Format: tar.FormatPAX}
		if f.typ == tar.TypeDir {
			h.Mode = 0o755
		}
		if f.name == "x/attr" {
			h.PAXRecords = map[string]string{"SCHILY.xattr.user.k": "v"}
		}
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		if _, err := tw.Write(f.data); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	gz.Close()
	return buf.Bytes()
}

// sampleFiles are small and large files, compressible and not, that
// cross spans of 64 KiB.
func sampleFiles() []testFile {
	r := rand.New(rand.NewPCG(1, 2))
	rnd := func(n int) []byte {
		b := make([]byte, n)
		for i := range b {
			b[i] = byte(r.Uint32())
		}
		return b
	}
	text := func(n int) []byte { return bytes.Repeat([]byte("lazysnap soci span "), n/19+1)[:n] }
	fs := []testFile{{name: "./", typ: tar.TypeDir}, {name: "x/", typ: tar.TypeDir}}
	for i := range 40 {
		fs = append(fs, testFile{name: "x/small" + string(rune('a'+i%26)) + string(rune('a'+i/26)), typ: tar.TypeReg, data: rnd(r.IntN(3000))})
	}
	fs = append(fs,
		testFile{name: "x/big", typ: tar.TypeReg, data: rnd(300 << 10)},
		testFile{name: "x/text", typ: tar.TypeReg, data: text(500 << 10)},
		testFile{name: "x/attr", typ: tar.TypeReg, data: []byte("attr")},
		testFile{name: "x/empty", typ: tar.TypeReg},
		testFile{name: "x/link", typ: tar.TypeSymlink, link: "big"},
		testFile{name: "x/hard", typ: tar.TypeLink, link: "x/big"},
		testFile{name: "y/z/deep", typ: tar.TypeReg, data: rnd(70 << 10)},
	)
	return fs
}

// extract reads a file's bytes the way a lazy mount does: each span it
// touches fetched by its range, verified and inflated from its checkpoint.
func extract(t testing.TB, z *soci.Ztoc, blob []byte, f *soci.File) []byte {
	t.Helper()
	var out []byte
	for k := z.SpanAt(f.Offset); k < len(z.SpanDigests) && int64(len(out)) < f.Size; k++ {
		s, e := z.SpanRange(k)
		raw := blob[s:e]
		sum := sha256.Sum256(raw)
		if digest.NewDigestFromBytes(digest.SHA256, sum[:]) != z.SpanDigests[k] {
			t.Fatalf("span %d: digest mismatch", k)
		}
		cp := z.Checkpoints.List[k]
		r, err := zran.Resume(bytes.NewReader(raw), zran.Checkpoint{In: cp.In, Bits: cp.Bits, Out: cp.Out, Window: cp.Window})
		if err != nil {
			t.Fatal(err)
		}
		os, oe := z.SpanOut(k)
		data := make([]byte, oe-os)
		if _, err := io.ReadFull(r, data); err != nil {
			t.Fatalf("span %d (%d+%d, bits %d): %v", k, s, e-s, cp.Bits, err)
		}
		lo, hi := max(f.Offset, os), min(f.Offset+f.Size, oe)
		if hi > lo {
			out = append(out, data[lo-os:hi-os]...)
		}
	}
	return out
}

func TestBuildExtract(t *testing.T) {
	files := sampleFiles()
	blob := makeLayer(t, files)
	z, err := soci.Build(bytes.NewReader(blob), soci.BuildOptions{SpanSize: 64 << 10})
	if err != nil {
		t.Fatal(err)
	}
	if z.CompressedSize != int64(len(blob)) || len(z.SpanDigests) < 5 {
		t.Fatalf("compressed size %d (blob %d), %d spans", z.CompressedSize, len(blob), len(z.SpanDigests))
	}
	if len(z.Files) != len(files) {
		t.Fatalf("%d entries, want %d", len(z.Files), len(files))
	}
	for i, f := range files {
		zf := &z.Files[i]
		if zf.Name != f.name || zf.Size != int64(len(f.data)) {
			t.Fatalf("entry %d: %q of %d bytes, want %q of %d", i, zf.Name, zf.Size, f.name, len(f.data))
		}
		if got := extract(t, z, blob, zf); !bytes.Equal(got, f.data) {
			t.Fatalf("%s: extracted %d bytes that differ from the %d written", f.name, len(got), len(f.data))
		}
	}
	b := soci.Marshal(z)
	z2, err := soci.Unmarshal(b, 0)
	if err != nil {
		t.Fatal(err)
	}
	for i := range z.Files {
		a, b := z.Files[i], z2.Files[i]
		if !a.ModTime.Equal(b.ModTime) || !reflect.DeepEqual(a.PAX, b.PAX) {
			t.Fatalf("entry %d differs after a round trip:\n%+v\n%+v", i, a, b)
		}
		a.ModTime, a.PAX, b.PAX = b.ModTime, nil, nil
		if !reflect.DeepEqual(a, b) {
			t.Fatalf("entry %d differs after a round trip:\n%+v\n%+v", i, a, b)
		}
	}
	if !reflect.DeepEqual(z.SpanDigests, z2.SpanDigests) || !reflect.DeepEqual(z.Checkpoints, z2.Checkpoints) {
		t.Fatal("spans differ after a round trip")
	}
	if !bytes.Equal(soci.Marshal(z2), b) {
		t.Fatal("re-marshalled zTOC differs")
	}
	if x := z2.Files[len(files)-5]; x.PAX["SCHILY.xattr.user.k"] != "v" {
		t.Fatalf("PAX records of x/attr: %v", x.PAX)
	}
}

func TestUnmarshalRejects(t *testing.T) {
	blob := makeLayer(t, sampleFiles())
	good, err := soci.Build(bytes.NewReader(blob), soci.BuildOptions{SpanSize: 64 << 10})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name   string
		change func(z *soci.Ztoc)
		want   error
	}{
		{"version", func(z *soci.Ztoc) { z.Version = "1.0" }, soci.ErrUnsupported},
		{"uncompressed", func(z *soci.Ztoc) { z.Algorithm = soci.AlgorithmUncompressed }, soci.ErrUnsupported},
		{"span digests missing", func(z *soci.Ztoc) { z.SpanDigests = z.SpanDigests[1:] }, soci.ErrInvalid},
		{"checkpoints out of order", func(z *soci.Ztoc) {
			z.Checkpoints.List[2].In, z.Checkpoints.List[3].In = z.Checkpoints.List[3].In, z.Checkpoints.List[2].In
		}, soci.ErrInvalid},
		{"checkpoint past the blob", func(z *soci.Ztoc) { z.Checkpoints.List[len(z.Checkpoints.List)-1].In = z.CompressedSize + 1 }, soci.ErrInvalid},
		{"first checkpoint not at 0", func(z *soci.Ztoc) { z.Checkpoints.List[0].Out = 1 }, soci.ErrInvalid},
		{"dotdot name", func(z *soci.Ztoc) { z.Files[3].Name = "../etc/passwd" }, soci.ErrInvalid},
		{"NUL in name", func(z *soci.Ztoc) { z.Files[3].Name = "a\x00b" }, soci.ErrInvalid},
		{"unknown type", func(z *soci.Ztoc) { z.Files[3].Type = "socket" }, soci.ErrInvalid},
		{"file past the stream", func(z *soci.Ztoc) { z.Files[len(z.Files)-1].Size = z.UncompressedSize }, soci.ErrInvalid},
		{"files out of order", func(z *soci.Ztoc) { z.Files[3].Offset, z.Files[4].Offset = z.Files[4].Offset, z.Files[3].Offset }, soci.ErrInvalid},
		{"dir with size", func(z *soci.Ztoc) { z.Files[1].Size = 1 }, soci.ErrInvalid},
		{"negative size", func(z *soci.Ztoc) { z.Files[3].Size = -1 }, soci.ErrInvalid},
	} {
		t.Run(tc.name, func(t *testing.T) {
			z := *good
			z.Files = append([]soci.File(nil), good.Files...)
			z.SpanDigests = append([]digest.Digest(nil), good.SpanDigests...)
			z.Checkpoints.List = append([]soci.Checkpoint(nil), good.Checkpoints.List...)
			tc.change(&z)
			if _, err := soci.Unmarshal(soci.Marshal(&z), 0); !errors.Is(err, tc.want) {
				t.Fatalf("Unmarshal: %v, want %v", err, tc.want)
			}
		})
	}
	if _, err := soci.Unmarshal(soci.Marshal(good), 3); !errors.Is(err, soci.ErrTooLarge) {
		t.Fatalf("3 entries at most: %v", err)
	}
}

func TestCheckpointsV1(t *testing.T) {
	blob := makeLayer(t, sampleFiles())
	z, err := soci.Build(bytes.NewReader(blob), soci.BuildOptions{SpanSize: 64 << 10})
	if err != nil {
		t.Fatal(err)
	}
	v1 := z.Checkpoints
	v1.V1 = true
	b := v1.Marshal()
	if len(b) != 12+(len(v1.List)-1)*soci.PackedCheckpointSize {
		t.Fatalf("v1 blob of %d bytes for %d checkpoints", len(b), len(v1.List))
	}
	got, err := soci.ParseCheckpoints(b)
	if err != nil {
		t.Fatal(err)
	}
	if !got.V1 || len(got.List) != len(v1.List) || got.List[0].In != 10 || got.List[0].Out != 0 {
		t.Fatalf("v1: %v, %d checkpoints, first %d/%d", got.V1, len(got.List), got.List[0].In, got.List[0].Out)
	}
	if !bytes.Equal(got.Marshal(), b) {
		t.Fatal("v1 blob not written back the same")
	}
	for _, bad := range [][]byte{nil, b[:11], b[:len(b)-1], append(b, 0)} {
		if _, err := soci.ParseCheckpoints(bad); err == nil {
			t.Fatalf("blob of %d bytes accepted", len(bad))
		}
	}
}

func TestBuildNotGzipTar(t *testing.T) {
	var buf bytes.Buffer
	gz := gzip.NewWriter(&buf)
	gz.Write(bytes.Repeat([]byte("not a tar header "), 100))
	gz.Close()
	for name, b := range map[string][]byte{"not gzip": []byte("plain text, no gzip header at all"), "not tar": buf.Bytes()} {
		if _, err := soci.Build(bytes.NewReader(b), soci.BuildOptions{}); !errors.Is(err, soci.ErrFormat) {
			t.Errorf("%s: %v, want ErrFormat", name, err)
		}
	}
}

// TestBuildMultiMember: a layer of several gzip members (pigz, appended
// layers) is indexed and read across member boundaries.
func TestBuildMultiMember(t *testing.T) {
	files := sampleFiles()
	one := makeLayer(t, files)
	zr, err := gzip.NewReader(bytes.NewReader(one))
	if err != nil {
		t.Fatal(err)
	}
	tarb, err := io.ReadAll(zr)
	if err != nil {
		t.Fatal(err)
	}
	var blob bytes.Buffer
	for _, part := range [][]byte{tarb[:len(tarb)/3], tarb[len(tarb)/3 : 2*len(tarb)/3], tarb[2*len(tarb)/3:]} {
		gz := gzip.NewWriter(&blob)
		gz.Write(part)
		gz.Close()
	}
	z, err := soci.Build(bytes.NewReader(blob.Bytes()), soci.BuildOptions{SpanSize: 64 << 10})
	if err != nil {
		t.Fatal(err)
	}
	for i, f := range files {
		if got := extract(t, z, blob.Bytes(), &z.Files[i]); !bytes.Equal(got, f.data) {
			t.Fatalf("%s: extracted bytes differ", f.name)
		}
	}
}

// TestBuildTee: Tee receives the whole uncompressed stream, the same with
// or without an entry the zTOC cannot describe (then Build fails after
// the stream's end), and a failing Tee ends Build with its error.
func TestBuildTee(t *testing.T) {
	gunzip := func(b []byte) []byte {
		zr, err := gzip.NewReader(bytes.NewReader(b))
		if err != nil {
			t.Fatal(err)
		}
		out, err := io.ReadAll(zr)
		if err != nil {
			t.Fatal(err)
		}
		return out
	}
	good := makeLayer(t, sampleFiles())
	odd := makeLayer(t, append(sampleFiles()[:5], testFile{name: "x/sparse", typ: '9'}, testFile{name: "x/after", typ: tar.TypeReg, data: []byte("after")}))
	for _, tc := range []struct {
		name    string
		blob    []byte
		wantErr error
	}{
		{"indexable", good, nil},
		{"an entry SOCI cannot describe", odd, soci.ErrUnsupported},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var tee bytes.Buffer
			_, err := soci.Build(bytes.NewReader(tc.blob), soci.BuildOptions{SpanSize: 64 << 10, Tee: &tee})
			if !errors.Is(err, tc.wantErr) || (tc.wantErr == nil) != (err == nil) {
				t.Fatalf("Build: %v, want %v", err, tc.wantErr)
			}
			if !bytes.Equal(tee.Bytes(), gunzip(tc.blob)) {
				t.Fatalf("Tee got %d bytes, the stream has %d", tee.Len(), len(gunzip(tc.blob)))
			}
		})
	}
	t.Run("Tee fails", func(t *testing.T) {
		werr := errors.New("disk full")
		_, err := soci.Build(bytes.NewReader(good), soci.BuildOptions{Tee: failingWriter{werr}})
		if !errors.Is(err, werr) {
			t.Fatalf("Build: %v, want the Tee's error", err)
		}
	})
}

type failingWriter struct{ err error }

func (f failingWriter) Write([]byte) (int, error) { return 0, f.err }
