package estargz_test

// Compatibility with the eStargz blobs Debian's ctr-remote (stargz-snapshotter)
// writes when it converts an image inside containerd: the layers must open,
// verify and read back here exactly as the source tars, and the manifest and
// config it writes must describe them correctly.

import (
	"archive/tar"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"testing"

	"github.com/lazysnap/lazysnap/estargz"
	"github.com/lazysnap/lazysnap/internal/testenv/containerd"
	"github.com/lazysnap/lazysnap/internal/testimage"
	"github.com/lazysnap/lazysnap/internal/testtar"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

func TestCtrRemoteConvertedBlobs(t *testing.T) {
	ctrd := containerd.Start(t, containerd.Options{NeedCtrRemote: true})

	base := testtar.Synthetic(9 << 20)
	upper := testtar.Synthetic(1 << 20)
	images := map[string][][]byte{
		"lazysnap.test/one-layer:v1":  {base},
		"lazysnap.test/two-layers:v1": {base, upper},
	}
	for name, layers := range images {
		archive, err := testimage.OCIArchive(name, layers...)
		if err != nil {
			t.Fatal(err)
		}
		path := filepath.Join(ctrd.Dir(), "import.tar")
		if err := os.WriteFile(path, archive, 0o600); err != nil {
			t.Fatal(err)
		}
		if out, err := ctrd.CtrRemote(t, "images", "import", "--no-unpack", path); err != nil {
			t.Fatalf("%v\n%s", err, out)
		}
	}
	if out, err := ctrd.Ctr(t, "images", "ls", "-q"); err != nil {
		t.Fatalf("%v\n%s", err, out)
	} else {
		t.Logf("imported:\n%s", out)
	}

	for i, tc := range []struct {
		name      string
		src       string
		args      []string
		chunkSize int64 // if set, no chunk may be larger
	}{
		{name: "defaults", src: "lazysnap.test/one-layer:v1"},
		{name: "chunk size 64KiB", src: "lazysnap.test/one-layer:v1", args: []string{"--estargz-chunk-size", "65536"}, chunkSize: 65536},
		{name: "compression level 1", src: "lazysnap.test/one-layer:v1", args: []string{"--estargz-compression-level", "1"}},
		{name: "two layers", src: "lazysnap.test/two-layers:v1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dst := fmt.Sprintf("lazysnap.test/converted-%d:esgz", i)
			args := append([]string{"images", "convert", "--estargz", "--oci"}, tc.args...)
			if out, err := ctrd.CtrRemote(t, append(args, tc.src, dst)...); err != nil {
				t.Fatalf("%v\n%s", err, out)
			}
			export := filepath.Join(ctrd.Dir(), fmt.Sprintf("export-%d.tar", i))
			if out, err := ctrd.Ctr(t, "images", "export", "--skip-manifest-json", export, dst); err != nil {
				t.Fatalf("%v\n%s", err, out)
			}
			blobs := readOCIArchive(t, export)
			manifest, config := convertedManifest(t, blobs)
			sources := images[tc.src]
			if len(manifest.Layers) != len(sources) || len(config.RootFS.DiffIDs) != len(sources) {
				t.Fatalf("%d layers and %d diff_ids, want %d", len(manifest.Layers), len(config.RootFS.DiffIDs), len(sources))
			}
			for l, desc := range manifest.Layers {
				t.Run(fmt.Sprintf("layer %d", l), func(t *testing.T) {
					checkCtrRemoteLayer(t, desc, config.RootFS.DiffIDs[l], blobs, sources[l], tc.chunkSize)
				})
			}
		})
	}
}

// checkCtrRemoteLayer checks one converted layer against its source tar.
func checkCtrRemoteLayer(t *testing.T, desc ocispec.Descriptor, diffID digest.Digest, blobs map[string][]byte, source []byte, chunkSize int64) {
	blob := blobs[desc.Digest.String()]
	if blob == nil {
		t.Fatalf("layer %s not in the export", desc.Digest)
	}
	if digest.FromBytes(blob) != desc.Digest || int64(len(blob)) != desc.Size {
		t.Fatalf("layer blob does not match its descriptor %s (%d bytes)", desc.Digest, desc.Size)
	}
	if desc.MediaType != ocispec.MediaTypeImageLayerGzip {
		t.Errorf("layer media type %s, want %s", desc.MediaType, ocispec.MediaTypeImageLayerGzip)
	}
	t.Logf("layer %s: %d bytes, annotations %v", desc.Digest, desc.Size, desc.Annotations)

	uncompressed := gunzipAll(t, blob)
	if got := digest.FromBytes(uncompressed); got != diffID {
		t.Errorf("config diff_id %s, sha256 of the gunzipped blob is %s", diffID, got)
	}
	if s, ok := desc.Annotations[estargz.UncompressedSizeAnnotation]; !ok {
		t.Logf("ctr-remote wrote no %s annotation", estargz.UncompressedSizeAnnotation)
	} else if n, err := strconv.ParseInt(s, 10, 64); err != nil || n != int64(len(uncompressed)) {
		t.Errorf("%s = %q, gunzipped blob is %d bytes", estargz.UncompressedSizeAnnotation, s, len(uncompressed))
	}

	tocDigest := digest.Digest(desc.Annotations[estargz.TOCJSONDigestAnnotation])
	if tocDigest == "" {
		t.Fatalf("layer has no %s annotation", estargz.TOCJSONDigestAnnotation)
	}
	r, err := estargz.Open(sectionOf(blob), estargz.WithTOCDigest(tocDigest))
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	src, err := testtar.Read(source)
	if err != nil {
		t.Fatal(err)
	}
	compareWithSource(t, r, src)

	if chunkSize > 0 {
		big, err := r.Lookup("big")
		if err != nil {
			t.Fatal(err)
		}
		if want := (big.Size + chunkSize - 1) / chunkSize; int64(len(big.Chunks)) < want {
			t.Errorf("big: %d chunks, want at least %d of at most %d bytes", len(big.Chunks), want, chunkSize)
		}
		for _, e := range r.TOC().Entries {
			for _, c := range e.Chunks {
				if c.Size > chunkSize {
					t.Errorf("%q: chunk at file offset %d is %d bytes, more than %d", e.Name, c.FileOffset, c.Size, chunkSize)
				}
			}
		}
	}

	// The blob must still be an ordinary tar.gz of the same files, plus the
	// TOC and landmark entries eStargz adds.
	got, err := testtar.Read(uncompressed)
	if err != nil {
		t.Fatalf("gunzipped blob is not a tar: %v", err)
	}
	for _, name := range testtar.Names(src) {
		g, ok := got[name]
		switch {
		case !ok:
			t.Errorf("tar stream: %q missing", name)
		case g.Header.Typeflag != src[name].Header.Typeflag && !(name == "" && g.Header.Typeflag == tar.TypeDir):
			t.Errorf("tar stream: %q type %c, want %c", name, g.Header.Typeflag, src[name].Header.Typeflag)
		case !bytes.Equal(g.Content, src[name].Content):
			t.Errorf("tar stream: %q content differs", name)
		}
	}
	for _, name := range testtar.Names(got) {
		if _, ok := src[name]; !ok {
			switch name {
			case estargz.TOCTarName, estargz.PrefetchLandmark, estargz.NoPrefetchLandmark:
			default:
				t.Errorf("tar stream: unexpected entry %q", name)
			}
		}
	}
}

// readOCIArchive returns the blobs of an exported OCI archive by digest, and
// its index.json under "index.json".
func readOCIArchive(t *testing.T, path string) map[string][]byte {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	out := map[string][]byte{}
	tr := tar.NewReader(f)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return out
		}
		if err != nil {
			t.Fatalf("export %s: %v", path, err)
		}
		if h.Typeflag != tar.TypeReg {
			continue
		}
		b, err := io.ReadAll(tr)
		if err != nil {
			t.Fatal(err)
		}
		name := testtar.Clean(h.Name)
		if dir, enc := filepath.Split(name); dir == "blobs/sha256/" {
			name = "sha256:" + enc
		}
		out[name] = b
	}
}

// convertedManifest follows index.json of an export to the image manifest
// (through a nested index for the running platform, if any) and its config.
func convertedManifest(t *testing.T, blobs map[string][]byte) (ocispec.Manifest, ocispec.Image) {
	t.Helper()
	unmarshal := func(name string, v any) {
		t.Helper()
		b, ok := blobs[name]
		if !ok {
			t.Fatalf("export has no %s", name)
		}
		if err := json.Unmarshal(b, v); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
	}
	var idx ocispec.Index
	unmarshal("index.json", &idx)
	if len(idx.Manifests) != 1 {
		t.Fatalf("export index has %d manifests, want 1", len(idx.Manifests))
	}
	desc := idx.Manifests[0]
	for desc.MediaType == ocispec.MediaTypeImageIndex {
		var nested ocispec.Index
		unmarshal(desc.Digest.String(), &nested)
		found := false
		for _, m := range nested.Manifests {
			if m.Platform == nil || (m.Platform.OS == "linux" && m.Platform.Architecture == runtime.GOARCH) {
				desc, found = m, true
				break
			}
		}
		if !found {
			t.Fatalf("index %s has no manifest for linux/%s", desc.Digest, runtime.GOARCH)
		}
	}
	if desc.MediaType != ocispec.MediaTypeImageManifest {
		t.Fatalf("converted image is a %s, want an OCI manifest", desc.MediaType)
	}
	var m ocispec.Manifest
	unmarshal(desc.Digest.String(), &m)
	var c ocispec.Image
	unmarshal(m.Config.Digest.String(), &c)
	return m, c
}
