package estargz_test

import (
	"archive/tar"
	"bytes"
	"errors"
	"io"
	"testing"

	"github.com/lazysnap/lazysnap/estargz"
	"github.com/lazysnap/lazysnap/internal/testtar"
	"github.com/opencontainers/go-digest"
)

func TestConvertRoundTrip(t *testing.T) {
	tarball := testtar.Synthetic(9 << 20)
	src, err := testtar.Read(tarball)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name        string
		opts        []estargz.ConvertOption
		prioritized []string
	}{
		{name: "defaults"},
		{name: "small chunks", opts: []estargz.ConvertOption{estargz.WithChunkSize(64 << 10)}},
		{name: "one worker level 1", opts: []estargz.ConvertOption{estargz.WithConcurrency(1), estargz.WithCompressionLevel(1)}},
		{name: "level 9", opts: []estargz.ConvertOption{estargz.WithCompressionLevel(9)}},
		{name: "prioritized", prioritized: []string{"usr/bin/tool-link2", "./etc/hostname", "missing/file", "big"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			opts := tc.opts
			if tc.prioritized != nil {
				opts = append(opts, estargz.WithPrioritizedFiles(tc.prioritized))
			}
			blob, res := convert(t, tarball, opts...)
			if res.Size != int64(len(blob)) || res.Digest != digest.FromBytes(blob) {
				t.Errorf("result size/digest %d %s do not describe the blob", res.Size, res.Digest)
			}
			raw := gunzipAll(t, blob)
			if res.DiffID != digest.FromBytes(raw) || res.UncompressedSize != int64(len(raw)) {
				t.Errorf("DiffID %s does not match the uncompressed stream", res.DiffID)
			}
			r, err := estargz.Open(sectionOf(blob), estargz.WithTOCDigest(res.TOCDigest))
			if err != nil {
				t.Fatalf("Open: %v", err)
			}
			compareWithSource(t, r, src)

			// the uncompressed blob is an ordinary tar with the same content
			unpacked, err := testtar.Read(raw)
			if err != nil {
				t.Fatalf("uncompressed blob is not a tar: %v", err)
			}
			for name := range src {
				if _, ok := unpacked[name]; !ok {
					t.Errorf("uncompressed tar lacks %q", name)
				}
			}
			if _, ok := unpacked[estargz.TOCTarName]; !ok {
				t.Errorf("uncompressed tar lacks the TOC")
			}

			entries := r.TOC().Entries
			var names []string
			for _, e := range entries {
				if !e.Implicit && e.Name != "" {
					names = append(names, e.Name)
				}
			}
			if tc.prioritized == nil {
				if names[0] != estargz.NoPrefetchLandmark || r.TOC().PrefetchEnd != 0 {
					t.Errorf("first entry %q, want %q", names[0], estargz.NoPrefetchLandmark)
				}
				return
			}
			want := []string{"usr", "usr/bin", "usr/bin/tool", "usr/bin/tool-link2", "etc", "etc/hostname", "big", estargz.PrefetchLandmark}
			if len(names) < len(want) {
				t.Fatalf("entries %q", names)
			}
			for i := range want {
				if names[i] != want[i] {
					t.Fatalf("entry order %q, want prefix %q", names[:len(want)], want)
				}
			}
			if len(res.MissingPrioritized) != 1 || res.MissingPrioritized[0] != "missing/file" {
				t.Errorf("missing prioritized = %q", res.MissingPrioritized)
			}
			lm, _ := r.Lookup(estargz.PrefetchLandmark)
			big, _ := r.Lookup("big")
			if pe := r.TOC().PrefetchEnd; pe != lm.Chunks[0].Offset || pe <= big.Chunks[len(big.Chunks)-1].Offset {
				t.Errorf("PrefetchEnd %d does not follow the prioritized files", pe)
			}
		})
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
