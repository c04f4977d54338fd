package remote

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"testing"

	"github.com/lazysnap/lazysnap/estargz"
	"github.com/lazysnap/lazysnap/fetcher"
	"github.com/lazysnap/lazysnap/fs/fetch"
	"github.com/lazysnap/lazysnap/internal/testenv"
	"github.com/lazysnap/lazysnap/internal/testenv/registry"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// smallFilesTar is a tar of n small files (the TOC grows with n).
func smallFilesTar(t *testing.T, n int) []byte {
	t.Helper()
	var b bytes.Buffer
	tw := tar.NewWriter(&b)
	for i := range n {
		content := []byte(fmt.Sprintf("content of file %d\n", i))
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: fmt.Sprintf("d%02d/f%05d", i%50, i),
			Mode: 0o644, Size: int64(len(content))}); err != nil {
			t.Fatal(err)
		}
		tw.Write(content)
	}
	tw.Close()
	return b.Bytes()
}

// pushSmallFiles converts a tar of n small files to eStargz and pushes it
// as a one-layer image; it returns the image, the blob and its TOC digest,
// and a fetcher that reaches the registry over plain HTTP.
func pushSmallFiles(t *testing.T, r *registry.Registry, hosts string, n int) (registry.Image, []byte, digest.Digest, *fetcher.Fetcher) {
	t.Helper()
	var blob bytes.Buffer
	res, err := estargz.Convert(context.Background(), &blob, io.NewSectionReader(bytes.NewReader(smallFilesTar(t, n)), 0, 1<<40))
	if err != nil {
		t.Fatal(err)
	}
	img, err := r.PushImage(context.Background(), "open/"+fmt.Sprint(n), "v1", blob.Bytes())
	if err != nil {
		t.Fatal(err)
	}
	f, err := fetcher.New(fetcher.Config{HostsDir: hosts})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return img, blob.Bytes(), res.TOCDigest, f
}

// TestOpenLayerRequests: opening a layer (size unknown, as containerd's
// labels leave it) costs one request when its TOC fits the tail read, two
// when it does not, against the real registry, but one when the layer's
// tail-size annotation (lazysnap convert's) says how large the tail with
// the TOC is; and reads of chunks in the tail are served from it,
// verified.
func TestOpenLayerRequests(t *testing.T) {
	r, hosts := startRegistry(t)
	exact := func(blob []byte) int64 { // the TOC's and footer's bytes
		off, _, err := estargz.ParseFooter(blob[len(blob)-estargz.FooterSize:])
		if err != nil {
			t.Fatal(err)
		}
		return int64(len(blob)) - off
	}
	for _, tc := range []struct {
		name      string
		files     int
		tailSize  func(blob []byte) int64 // the annotation's value; nil: none
		wantOpen  int64
		tailReads bool // the last file's chunk lies in the tail
	}{
		{name: "small TOC", files: 20, wantOpen: 1, tailReads: true},
		{name: "TOC larger than the tail", files: 5000, wantOpen: 2},
		{name: "TOC larger than the tail, tail size annotated", files: 5000, tailSize: exact, wantOpen: 1},
		{name: "tail size annotated too small", files: 5000, tailSize: func([]byte) int64 { return 100 }, wantOpen: 2},
		{name: "tail size annotated past the cap", files: 5000, tailSize: func([]byte) int64 { return maxTailHint + 1 }, wantOpen: 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			img, blob, toc, f := pushSmallFiles(t, r, hosts, tc.files)
			requests := func() int64 { return f.Stats()[r.Host].Requests }
			desc := img.Layers[0]
			desc.Size = 0
			if tc.tailSize != nil {
				desc.Annotations = map[string]string{estargz.TailSizeAnnotation: fmt.Sprint(tc.tailSize(blob))}
			}
			b, er, err := openLayer(NewRegistrySource(f), img.Ref, desc, toc)
			if err != nil {
				t.Fatal(err)
			}
			if n := requests(); n != tc.wantOpen {
				t.Errorf("opening took %d requests, want %d", n, tc.wantOpen)
			}
			if b.Size() != int64(len(blob)) {
				t.Fatalf("size %d, want %d", b.Size(), len(blob))
			}
			last := fmt.Sprintf("d%02d/f%05d", (tc.files-1)%50, tc.files-1)
			e, err := er.Lookup(last)
			if err != nil {
				t.Fatal(err)
			}
			c := &e.Chunks[0]
			before := requests()
			raw, err := b.ReadRange(context.Background(), c.Offset, c.CompressedSize())
			if err != nil {
				t.Fatal(err)
			}
			data, err := estargz.DecodeChunk(nil, c, raw)
			if err != nil {
				t.Fatalf("chunk of %s: %v", last, err)
			}
			if want := fmt.Sprintf("content of file %d\n", tc.files-1); string(data) != want {
				t.Fatalf("%s holds %q, want %q", last, data, want)
			}
			if got, want := requests()-before, map[bool]int64{true: 0, false: 1}[tc.tailReads]; got != want {
				t.Errorf("reading %s took %d requests, want %d", last, got, want)
			}
			// bytes that fail verification are fetched anew, not taken from the tail again
			if tb, ok := b.(*tailBlob); ok {
				before = requests()
				var streamed []byte
				if err := tb.StreamRange(context.Background(), c.Offset, c.CompressedSize(), func(p []byte) { streamed = append(streamed[:0], p...) }); err != nil || !bytes.Equal(streamed, raw) {
					t.Fatalf("StreamRange: %v", err)
				}
				if got := requests() - before; got != 0 {
					t.Errorf("streaming %s again took %d requests, want 0 (from the tail or the cache)", last, got)
				}
				tb.Invalidate(c.Offset, c.CompressedSize())
				before = requests()
				if again, err := b.ReadRange(context.Background(), c.Offset, c.CompressedSize()); err != nil || !bytes.Equal(again, raw) {
					t.Fatalf("after Invalidate: %v", err)
				}
				if requests() == before {
					t.Error("after Invalidate, the range was served without a request")
				}
			}
		})
	}
	t.Run("wrong TOC digest", func(t *testing.T) {
		img, _, _, f := pushSmallFiles(t, r, hosts, 3)
		if _, _, err := openLayer(NewRegistrySource(f), img.Ref, img.Layers[0], digest.FromString("other")); !errors.Is(err, estargz.ErrVerify) {
			t.Fatalf("open with a wrong TOC digest: %v, want ErrVerify", err)
		}
	})
}

// openLayer opens a layer blob and its TOC, verified against toc, as Mount
// does.
func openLayer(src Source, ref string, desc ocispec.Descriptor, toc digest.Digest) (Blob, *estargz.Reader, error) {
	b, err := src.Blob(context.Background(), ref, desc)
	if err != nil {
		return nil, nil, err
	}
	er, err := openBlob(b, toc)
	return b, er, err
}

// openBlob opens the TOC of an open blob, verified against toc, taking
// what it can from the blob's tail when it has one.
func openBlob(b Blob, toc digest.Digest) (*estargz.Reader, error) {
	tb, _ := b.(*tailBlob)
	opts := []estargz.OpenOption{estargz.WithTOCDigest(toc)}
	if tb != nil {
		opts = append(opts, estargz.WithTail(tb.Tail()))
	}
	er, err := estargz.Open(io.NewSectionReader(b, 0, b.Size()), opts...)
	if tb != nil {
		tb.trimTail(mountTailSize)
	}
	return er, err
}

// startRegistry starts a registry and writes a hosts directory that
// reaches it, for a fetcher.Config.HostsDir.
func startRegistry(t *testing.T) (*registry.Registry, string) {
	t.Helper()
	r := registry.Start(t, registry.Options{})
	hosts := t.TempDir()
	if _, err := registry.WriteHostsConfig(hosts, r.Host, r.Endpoint()); err != nil {
		t.Fatal(err)
	}
	return r, hosts
}

// TestTailBlobMultiRange: several ranges before the tail come in one
// multi-range request to the real registry; one in the tail from memory;
// every range's bytes are the blob's.
func TestTailBlobMultiRange(t *testing.T) {
	r, hosts := startRegistry(t)
	img, blob, toc, f := pushSmallFiles(t, r, hosts, 5000)
	requests := func() int64 { return f.Stats()[r.Host].Requests }
	b, _, err := openLayer(NewRegistrySource(f), img.Ref, img.Layers[0], toc)
	if err != nil {
		t.Fatal(err)
	}
	tb, ok := b.(*tailBlob)
	if !ok {
		t.Fatalf("%T is not a tailBlob", b)
	}
	size := int64(len(blob))
	for _, tc := range []struct {
		name         string
		ranges       []fetch.Range
		wantRequests int64
	}{
		{name: "three far apart: one request", ranges: []fetch.Range{{Off: 100, Len: 50}, {Off: size / 3, Len: 700}, {Off: size / 2, Len: 3000}}, wantRequests: 1},
		{name: "one in the tail: none", ranges: []fetch.Range{{Off: size - 100, Len: 60}}, wantRequests: 0},
		{name: "both", ranges: []fetch.Range{{Off: 5000, Len: 80}, {Off: size - 30, Len: 30}}, wantRequests: 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := requests()
			got, err := tb.ReadMultiRange(context.Background(), tc.ranges)
			if err != nil {
				t.Fatal(err)
			}
			for i, rg := range tc.ranges {
				if !bytes.Equal(got[i], blob[rg.Off:rg.Off+rg.Len]) {
					t.Errorf("range %d+%d: wrong bytes", rg.Off, rg.Len)
				}
			}
			if n := requests() - before; n != tc.wantRequests {
				t.Errorf("%d requests, want %d", n, tc.wantRequests)
			}
		})
	}
}

// startFUSERegistry skips without /dev/fuse, else starts a registry and a
// fetcher reaching it (closed by the test's cleanup).
func startFUSERegistry(t *testing.T) (*registry.Registry, *fetcher.Fetcher) {
	t.Helper()
	testenv.NeedFUSE(t)
	r, hosts := startRegistry(t)
	f, err := fetcher.New(fetcher.Config{HostsDir: hosts})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return r, f
}
