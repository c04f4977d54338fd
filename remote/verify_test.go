package remote

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/lazysnap/lazysnap/estargz"
	"github.com/lazysnap/lazysnap/fetcher"
	"github.com/lazysnap/lazysnap/fs/fetch"
	"github.com/lazysnap/lazysnap/internal/testenv"
	"github.com/lazysnap/lazysnap/internal/testenv/registry"
	"github.com/lazysnap/lazysnap/snapshotter"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// verifyTar is a layer of directories, small files and a large random
// file of several chunks; it returns the files' contents too.
func verifyTar(t *testing.T, seed uint64) ([]byte, map[string][]byte) {
	t.Helper()
	files := map[string][]byte{}
	var b bytes.Buffer
	tw := tar.NewWriter(&b)
	for d := range 4 {
		dir := fmt.Sprintf("d%d/", d)
		tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: dir, Mode: 0o755})
		for i := range 8 {
			name := fmt.Sprintf("%sf%d", dir, i)
			files[name] = []byte(strings.Repeat(name+" ", 50+i))
		}
	}
	big := make([]byte, 3<<20)
	rand.NewChaCha8([32]byte{byte(seed)}).Read(big)
	files["big"] = big
	for _, name := range slices.Sorted(maps.Keys(files)) {
		tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: 0o644, Size: int64(len(files[name]))})
		tw.Write(files[name])
	}
	tw.Close()
	return b.Bytes(), files
}

// pushVerifyLayer converts tarball to eStargz and pushes the blob to repo;
// with damage, the registry's stored blob is then changed in place (same
// size), so that it serves other bytes than the digest names. It returns
// the layer's descriptor, TOC annotation included.
func pushVerifyLayer(t *testing.T, r *registry.Registry, repo string, tarball []byte, damage func([]byte)) ocispec.Descriptor {
	t.Helper()
	var blob bytes.Buffer
	res, err := estargz.Convert(context.Background(), &blob, io.NewSectionReader(bytes.NewReader(tarball), 0, int64(len(tarball))), estargz.WithChunkSize(512<<10))
	if err != nil {
		t.Fatal(err)
	}
	d, err := r.Pusher().PushBlob(context.Background(), repo, blob.Bytes())
	if err != nil {
		t.Fatal(err)
	}
	d.MediaType = ocispec.MediaTypeImageLayerGzip
	d.Annotations = map[string]string{estargz.TOCJSONDigestAnnotation: res.TOCDigest.String()}
	if damage != nil {
		b := bytes.Clone(blob.Bytes())
		damage(b)
		if err := os.WriteFile(r.BlobPath(d.Digest.String()), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return d
}

// gzipMTime changes the modification time in the header of the gzip
// member at the start of the blob: no chunk digest covers it (chunks are
// verified by their uncompressed bytes), the blob digest does.
func gzipMTime(b []byte) {
	if b[0] != 0x1f || b[1] != 0x8b {
		panic("not a gzip member")
	}
	b[4] ^= 0x5a
}

// waitVerification polls the layer at mp until its verification state is
// final.
func waitVerification(t *testing.T, rfs *FS, mp string) string {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for {
		for _, l := range rfs.Layers() {
			if l.Mountpoint == mp && (l.Verification == VerifyVerified || isBad(l.Verification)) {
				return l.Verification
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("verification not done: %+v", rfs.Layers())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestVerifyBlob mounts layers through a real registry and real FUSE
// mounts with VerifyBlob and a chunk cache capped below the layer: a
// sound layer ends verified (mostly from the cache, the gaps fetched); a
// layer whose chunks all match the TOC but whose blob is not the one its
// digest names ends bad, with the reason in status, a mark that survives a
// restart, and new Mounts refused as verification (the snapshotter falls
// back), while the running mount keeps serving its verified files.
func TestVerifyBlob(t *testing.T) {
	testenv.NeedFUSE(t)
	r, hosts := startRegistry(t)
	newFS := func(t *testing.T, root string) (*FS, *fetcher.Fetcher) {
		f, err := fetcher.New(fetcher.Config{HostsDir: hosts, CacheDir: filepath.Join(root, "cache"), CacheMaxBytes: 2 << 20, MemCacheMaxBytes: -1})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { f.Close() })
		return New(NewRegistrySource(f), Options{Root: root, VerifyBlob: true, Layer: fetch.Options{BackgroundQuiet: -1}}), f
	}
	mount := func(t *testing.T, rfs *FS, d ocispec.Descriptor, ref string) (string, error) {
		mp := t.TempDir()
		err := rfs.Mount(context.Background(), mp, layerLabels(ref, []ocispec.Descriptor{d}, 0))
		if err == nil {
			t.Cleanup(func() { rfs.Unmount(context.Background(), mp) })
		}
		return mp, err
	}
	readAll := func(t *testing.T, mp string, files map[string][]byte) {
		t.Helper()
		for name, want := range files {
			got, err := os.ReadFile(filepath.Join(mp, name))
			if err != nil || !bytes.Equal(got, want) {
				t.Fatalf("%s: %v (%d bytes, want %d)", name, err, len(got), len(want))
			}
		}
	}

	t.Run("sound layer", func(t *testing.T) {
		tarball, files := verifyTar(t, 1)
		d := pushVerifyLayer(t, r, "verify/good", tarball, nil)
		root := t.TempDir()
		rfs, _ := newFS(t, root)
		mp, err := mount(t, rfs, d, r.Ref("verify/good", "v1"))
		if err != nil {
			t.Fatal(err)
		}
		if got := waitVerification(t, rfs, mp); got != VerifyVerified {
			t.Fatalf("verification: %s", got)
		}
		st := rfs.VerifyStats()
		if st.Verified != 1 || st.Bad != 0 || st.CachedBytes+st.FetchedBytes != d.Size || st.CachedBytes == 0 || st.FetchedBytes == 0 {
			t.Fatalf("stats %+v for a blob of %d bytes: want one verification, partly from the capped cache, partly fetched", st, d.Size)
		}
		t.Logf("verified %d bytes: %d from the cache, %d fetched", d.Size, st.CachedBytes, st.FetchedBytes)
		readAll(t, mp, files)
		// a second mount of the layer (a restart) need not verify again
		rfs2, _ := newFS(t, root)
		mp2, err := mount(t, rfs2, d, r.Ref("verify/good", "v1"))
		if err != nil {
			t.Fatal(err)
		}
		if got := waitVerification(t, rfs2, mp2); got != VerifyVerified || rfs2.VerifyStats() != (VerifyStats{}) {
			t.Fatalf("remount: %s, %+v; want verified by the mark, nothing read", got, rfs2.VerifyStats())
		}
	})

	t.Run("blob other than its digest", func(t *testing.T) {
		tarball, files := verifyTar(t, 2)
		d := pushVerifyLayer(t, r, "verify/bad", tarball, gzipMTime)
		ref := r.Ref("verify/bad", "v1")
		root := t.TempDir()
		rfs, _ := newFS(t, root)
		mp, err := mount(t, rfs, d, ref)
		if err != nil {
			t.Fatal(err)
		}
		got := waitVerification(t, rfs, mp)
		if !isBad(got) || !strings.Contains(got, "not "+d.Digest.String()) {
			t.Fatalf("verification: %s, want bad: the digest differs", got)
		}
		st := rfs.VerifyStats()
		if st.Bad != 1 || st.Verified != 0 || st.FetchedBytes < d.Size {
			t.Fatalf("stats %+v: want one bad layer, confirmed by reading the whole blob from the registry", st)
		}
		if bl := rfs.BadLayers(); len(bl) != 1 || bl[0].Digest != d.Digest || bl[0].Reason == "" {
			t.Fatalf("bad layers: %+v", bl)
		}
		// the running mount serves what it has verified against the TOC
		readAll(t, mp, files)
		for name, fs := range map[string]*FS{"this FS": rfs, "after a restart": func() *FS { f, _ := newFS(t, root); return f }()} {
			if _, err := mount(t, fs, d, ref); !errors.Is(err, snapshotter.ReasonVerification) || !strings.Contains(err.Error(), "found bad") {
				t.Fatalf("new Mount (%s): %v, want refused as verification", name, err)
			}
		}
	})
}

// checker is a Decoder with a BlobChecker: it reads n bytes of the blob
// (all with n < 0) and returns err.
type checker struct {
	estargz.Decoder
	n     int64
	err   error
	read  *int64
	panic bool // after reading
}

func (c checker) CheckBlob(ctx context.Context, blob io.Reader) error {
	r := blob
	if c.n >= 0 {
		r = io.LimitReader(blob, c.n)
	}
	n, err := io.Copy(io.Discard, r)
	*c.read = n
	if c.panic {
		var m map[string]int
		m["entry"]++ // a nil map: a bug
	}
	if err != nil {
		return err
	}
	return c.err
}

// TestBlobChecker: a format's BlobChecker sees the whole blob in order
// with the digest check; its error marks the layer bad with its reason,
// and one that stops reading early does not keep the digest from being
// checked.
func TestBlobChecker(t *testing.T) {
	r, hosts := startRegistry(t)
	tarball, _ := verifyTar(t, 3)
	d := pushVerifyLayer(t, r, "verify/checker", tarball, nil)
	f, err := fetcher.New(fetcher.Config{HostsDir: hosts})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	b, err := NewRegistrySource(f).Blob(context.Background(), r.Ref("verify/checker", "v1"), d)
	if err != nil {
		t.Fatal(err)
	}
	k := layerKey{blob: d.Digest, index: d.Digest}
	for _, tc := range []struct {
		name       string
		n          int64
		err        error
		panic      bool
		wantReason string
		wantRead   int64
	}{
		{"reads all, agrees", -1, nil, false, "", d.Size},
		{"reads all, disagrees", -1, errors.New("file list differs"), false, "does not match its index", d.Size},
		{"stops early, agrees", 100, nil, false, "", 100},
		{"stops early, disagrees", 100, errors.New("bad header"), false, "bad header", 100},
		{"panics", 100, nil, true, "panic: assignment to entry in nil map at remote.checker.CheckBlob verify_test.go:", 100},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var read int64
			v := newVerifier(t.TempDir())
			reason, blobBad, err := v.check(context.Background(), k, b, checker{n: tc.n, err: tc.err, read: &read, panic: tc.panic})
			if err != nil || blobBad {
				t.Fatalf("check: %v; the blob's fault: %v, want the index's at most", err, blobBad)
			}
			if (tc.wantReason == "") != (reason == "") || !strings.Contains(reason, tc.wantReason) {
				t.Fatalf("reason %q, want %q", reason, tc.wantReason)
			}
			if read != tc.wantRead {
				t.Fatalf("the checker read %d bytes, want %d", read, tc.wantRead)
			}
		})
	}
}

// stuckChecker reads nothing and returns only when ctx ends.
type stuckChecker struct {
	estargz.Decoder
	started chan struct{}
}

func (c stuckChecker) CheckBlob(ctx context.Context, blob io.Reader) error {
	close(c.started)
	<-ctx.Done()
	return ctx.Err()
}

// TestBlobCheckerUnmount: a checker that reads nothing and returns when
// its context ends does not hold a verification (and so an Unmount)
// beyond it: the blob's writes into its pipe end with it.
func TestBlobCheckerUnmount(t *testing.T) {
	r, hosts := startRegistry(t)
	tarball, _ := verifyTar(t, 4)
	d := pushVerifyLayer(t, r, "verify/stuck", tarball, nil)
	f, err := fetcher.New(fetcher.Config{HostsDir: hosts})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	b, err := NewRegistrySource(f).Blob(context.Background(), r.Ref("verify/stuck", "v1"), d)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	chk := stuckChecker{started: make(chan struct{})}
	go func() {
		<-chk.started
		cancel()
	}()
	reason, _, err := newVerifier(t.TempDir()).check(ctx, layerKey{blob: d.Digest, index: d.Digest}, b, chk)
	if !errors.Is(err, context.Canceled) || reason != "" {
		t.Fatalf("check with a stuck checker, cancelled: %q, %v; want the context's error and no verdict", reason, err)
	}
}

// TestBadMarks: a blob's mark refuses every index of it, an index's mark
// only that index; marks are listed, and a damaged mark still marks what
// its name says.
func TestBadMarks(t *testing.T) {
	blob, other := key("blob", "index a"), key("other blob", "index a")
	indexB := layerKey{blob: blob.blob, index: key("", "index b").index}
	tests := []struct {
		name    string
		marks   []BadLayer
		damage  bool // overwrite each mark with garbage
		refused map[layerKey]bool
	}{
		{"none", nil, false, map[layerKey]bool{blob: false, indexB: false, other: false}},
		{"the blob", []BadLayer{{Digest: blob.blob, Reason: "digest"}}, false,
			map[layerKey]bool{blob: true, indexB: true, other: false}},
		{"one index", []BadLayer{{Digest: blob.blob, Index: blob.index, Reason: "file list"}}, false,
			map[layerKey]bool{blob: true, indexB: false, other: false}},
		{"damaged index mark", []BadLayer{{Digest: blob.blob, Index: blob.index, Reason: "file list"}}, true,
			map[layerKey]bool{blob: true, indexB: false, other: false}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			v := newVerifier(t.TempDir())
			for _, m := range tc.marks {
				if err := v.markBad(m); err != nil {
					t.Fatal(err)
				}
				if tc.damage {
					os.WriteFile(filepath.Join(v.badDir(), badName(m.Digest, m.Index)), []byte("{garbage"), 0o600)
				}
			}
			for k, want := range tc.refused {
				if _, got := v.badMark(k); got != want {
					t.Errorf("Mount of %v refused: %v, want %v", k, got, want)
				}
			}
			listed := v.badLayers()
			if len(listed) != len(tc.marks) {
				t.Fatalf("listed %+v, want %d marks", listed, len(tc.marks))
			}
			for i, m := range tc.marks {
				if listed[i].Digest != m.Digest || listed[i].Index != m.Index || listed[i].Reason == "" {
					t.Errorf("listed %+v, want %+v", listed[i], m)
				}
			}
		})
	}
}
