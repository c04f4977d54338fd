package remote

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/lazysnap/lazysnap/estargz"
	"github.com/lazysnap/lazysnap/fetcher"
	"github.com/lazysnap/lazysnap/internal/testenv/registry"
	"github.com/lazysnap/lazysnap/snapshotter"
	"github.com/lazysnap/lazysnap/zstdchunked"
)

// xattrTar is a tar of n files, each with an xattr of size random bytes
// (a fixed seed): a TOC that hardly compresses, n*size*4/3 bytes of
// base64 in the TOC JSON.
func xattrTar(t *testing.T, n, size int) []byte {
	t.Helper()
	rng := rand.New(rand.NewPCG(uint64(n), uint64(size)))
	var b bytes.Buffer
	tw := tar.NewWriter(&b)
	for i := range n {
		v := make([]byte, size)
		for j := range v {
			v[j] = byte(rng.Uint32())
		}
		content := []byte(fmt.Sprintf("file %d\n", i))
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: fmt.Sprintf("f%04d", i), Mode: 0o644, Size: int64(len(content)),
			Format: tar.FormatPAX, PAXRecords: map[string]string{"SCHILY.xattr.user.blob": string(v)}}); err != nil {
			t.Fatal(err)
		}
		tw.Write(content)
	}
	tw.Close()
	return b.Bytes()
}

// TestTOCReadTimeout: a registry that stalls while a layer's TOC is read
// makes the layer fall back with the timeout as its reason: the error
// wraps fetcher.ErrTimeout and snapshotter.ReasonTimeout, and neither
// not-lazy nor a format's ErrFormat (a TOC cut short by a failed read is
// not a malformed one). eStargz reads a compressed TOC of up to 8 MiB
// beyond the tail in one request and streams a larger one; zstd:chunked
// reads its own after the manifest.
func TestTOCReadTimeout(t *testing.T) {
	r := registry.Start(t, registry.Options{})
	wan := registry.StartWANProxy(t, r.URL(), registry.WANOptions{})
	hosts := t.TempDir()
	if _, err := registry.WriteHostsConfig(hosts, wan.Host, registry.Endpoint{URL: wan.URL}); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	const stallAfter = 2 * mountTailSize // the tail's request is answered; the TOC's stalls
	pushEStargz := func(t *testing.T, repo string, tarball []byte, minTOC int64) map[string]string {
		var blob bytes.Buffer
		res, err := estargz.Convert(ctx, &blob, io.NewSectionReader(bytes.NewReader(tarball), 0, int64(len(tarball))))
		if err != nil {
			t.Fatal(err)
		}
		tocOff, _, err := estargz.ParseFooter(blob.Bytes()[blob.Len()-estargz.FooterSize:])
		if err != nil {
			t.Fatal(err)
		}
		if toc := int64(blob.Len()) - tocOff; toc < minTOC {
			t.Fatalf("the compressed TOC is %d bytes, want at least %d", toc, minTOC)
		}
		img, err := r.PushImage(ctx, repo, "v1", blob.Bytes())
		if err != nil {
			t.Fatal(err)
		}
		labels := layerLabels(wan.Host+strings.TrimPrefix(img.Ref, r.Host), img.Layers, 0)
		labels[snapshotter.LabelTOCDigest] = res.TOCDigest.String()
		return labels
	}
	for _, tc := range []struct {
		name   string
		labels func(t *testing.T) map[string]string
	}{
		{"eStargz TOC in one read", func(t *testing.T) map[string]string {
			return pushEStargz(t, "timeout/one", smallFilesTar(t, 10000), mountTailSize+stallAfter)
		}},
		{"eStargz TOC streamed (over 8 MiB)", func(t *testing.T) map[string]string {
			return pushEStargz(t, "timeout/streamed", xattrTar(t, 512, 24<<10), 9<<20)
		}},
		{"zstd:chunked", func(t *testing.T) map[string]string {
			ref, layers := pushZstdChunked(t, r, "timeout/zc", smallFilesTar(t, 10000))
			labels := layerLabels(wan.Host+strings.TrimPrefix(ref, r.Host), layers, 0)
			delete(labels, snapshotter.LabelTOCDigest) // as containerd passes it
			return labels
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			labels := tc.labels(t)
			f, err := fetcher.New(fetcher.Config{HostsDir: hosts, StallTimeout: 100 * time.Millisecond,
				RequestTimeout: 10 * time.Second, Retries: 1, RetryBaseDelay: time.Millisecond})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { f.Close() })
			rfs := New(NewRegistrySource(f), Options{Root: t.TempDir()})
			t.Cleanup(func() { rfs.Close() })
			wan.SetFaults(registry.Faults{StallEvery: 1, StallAfter: stallAfter})
			defer wan.SetFaults(registry.Faults{})
			stalls := wan.Stalls()
			mp := t.TempDir()
			err = rfs.Mount(ctx, mp, labels)
			if err == nil {
				rfs.Unmount(ctx, mp)
				t.Fatal("Mount succeeded with the registry stalling every TOC read")
			}
			if wan.Stalls() == stalls {
				t.Fatalf("no response stalled; Mount: %v", err)
			}
			var reason snapshotter.Reason
			if !errors.As(err, &reason) || reason != snapshotter.ReasonTimeout || !errors.Is(err, fetcher.ErrTimeout) {
				t.Fatalf("Mount: %v (reason %q), want the fetcher's timeout with reason %q", err, reason, snapshotter.ReasonTimeout)
			}
			for _, not := range []error{snapshotter.ReasonNotLazy, estargz.ErrFormat, zstdchunked.ErrFormat} {
				if errors.Is(err, not) {
					t.Errorf("Mount: %v, which is %q too", err, not)
				}
			}
		})
	}
}
