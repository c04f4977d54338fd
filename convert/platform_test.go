package convert_test

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"runtime"
	"testing"

	"github.com/lazysnap/lazysnap/convert"
	"github.com/lazysnap/lazysnap/internal/testimage"
	"github.com/lazysnap/lazysnap/internal/testtar"
	"github.com/lazysnap/lazysnap/soci"
	"github.com/opencontainers/go-digest"
	specs "github.com/opencontainers/image-spec/specs-go"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// twoPlatformLayout writes a layout whose one image is an image index of
// two manifests: linux/GOARCH and linux/riscv64 (other files), and an
// attestation-like entry of platform unknown/unknown.
func twoPlatformLayout(t *testing.T) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "multi")
	var descs []ocispec.Descriptor
	for i, p := range []ocispec.Platform{{OS: "linux", Architecture: runtime.GOARCH}, {OS: "linux", Architecture: "riscv64"}, {OS: "unknown", Architecture: "unknown"}} {
		img, err := testimage.New("lazysnap.test/multi:1", testtar.Files([][2]string{{"f", p.Architecture}, {"n", string(rune('a' + i))}}))
		if err != nil {
			t.Fatal(err)
		}
		if err := img.WriteLayout(dir); err != nil {
			t.Fatal(err)
		}
		d := img.Manifest
		d.Annotations, d.Platform = nil, &p
		descs = append(descs, d)
	}
	b, err := json.Marshal(ocispec.Index{Versioned: specs.Versioned{SchemaVersion: 2}, MediaType: ocispec.MediaTypeImageIndex, Manifests: descs})
	if err != nil {
		t.Fatal(err)
	}
	d := digest.FromBytes(b)
	if err := os.WriteFile(filepath.Join(dir, "blobs", "sha256", d.Encoded()), b, 0o644); err != nil {
		t.Fatal(err)
	}
	top, _ := json.Marshal(ocispec.Index{Versioned: specs.Versioned{SchemaVersion: 2}, MediaType: ocispec.MediaTypeImageIndex,
		Manifests: []ocispec.Descriptor{{MediaType: ocispec.MediaTypeImageIndex, Digest: d, Size: int64(len(b))}}})
	if err := os.WriteFile(filepath.Join(dir, "index.json"), top, 0o644); err != nil {
		t.Fatal(err)
	}
	return dir
}

// platformsOf lists the platforms of the image index a layout's one
// index.json entry names, SOCI indexes left out.
func platformsOf(t *testing.T, dir string) []string {
	t.Helper()
	var idx ocispec.Index
	readLayoutJSON(t, dir, ocispec.Descriptor{Digest: rootDigest(t, dir)}, &idx)
	var out []string
	for _, m := range idx.Manifests {
		if m.ArtifactType == soci.ArtifactTypeV2 {
			continue
		}
		out = append(out, m.Platform.OS+"/"+m.Platform.Architecture)
	}
	return out
}

// TestPlatforms: --platform selects the manifests of an image index that
// convert and index write (the others are left out); none selects all; a
// platform the image lacks is ErrPlatform, as is one that does not parse;
// a single-manifest image is checked against its config's platform.
func TestPlatforms(t *testing.T) {
	host := "linux/" + runtime.GOARCH
	cases := []struct {
		name      string
		platforms string
		want      []string // nil: ErrPlatform
	}{
		{"all", "", []string{host, "linux/riscv64", "unknown/unknown"}},
		{"host", host, []string{host}},
		{"other", "linux/riscv64", []string{"linux/riscv64"}},
		{"both", host + ", linux/riscv64", []string{host, "linux/riscv64"}},
		{"absent", "windows/amd64", nil},
	}
	src := twoPlatformLayout(t)
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			ps, err := convert.ParsePlatforms(c.platforms)
			if err != nil {
				t.Fatal(err)
			}
			for _, run := range []struct {
				name string
				do   func(dst string) error
			}{
				{"convert", func(dst string) error {
					_, err := convert.Image(context.Background(), src, dst, convert.Options{Platforms: ps})
					return err
				}},
				{"index", func(dst string) error {
					_, err := convert.IndexImage(context.Background(), src, dst, convert.IndexOptions{Platforms: ps, SpanSize: 64 << 10})
					return err
				}},
			} {
				dst := filepath.Join(t.TempDir(), "out")
				err := run.do(dst)
				if c.want == nil {
					if !errors.Is(err, convert.ErrPlatform) {
						t.Fatalf("%s: %v, want ErrPlatform", run.name, err)
					}
					continue
				}
				if err != nil {
					t.Fatalf("%s: %v", run.name, err)
				}
				if got := platformsOf(t, dst); !equal(got, c.want) {
					t.Fatalf("%s: platforms %v, want %v", run.name, got, c.want)
				}
			}
		})
	}

	if _, err := convert.ParsePlatforms("linux/amd64,,/x/"); !errors.Is(err, convert.ErrPlatform) {
		t.Fatalf("a bad platform: %v", err)
	}
	single := filepath.Join(t.TempDir(), "single")
	if _, err := testimage.Layout(single, "lazysnap.test/single:1", testtar.Files([][2]string{{"f", "x"}})); err != nil {
		t.Fatal(err)
	}
	// index.json's entry has the platform: rewrite it without, so that
	// the config's is the one checked
	var top ocispec.Index
	b, _ := os.ReadFile(filepath.Join(single, "index.json"))
	json.Unmarshal(b, &top)
	top.Manifests[0].Platform = nil
	b, _ = json.Marshal(top)
	os.WriteFile(filepath.Join(single, "index.json"), b, 0o644)
	other, _ := convert.ParsePlatforms("linux/riscv64")
	if runtime.GOARCH == "riscv64" {
		other, _ = convert.ParsePlatforms("linux/amd64")
	}
	if _, err := convert.Image(context.Background(), single, filepath.Join(t.TempDir(), "o"), convert.Options{Platforms: other}); !errors.Is(err, convert.ErrPlatform) {
		t.Fatalf("convert of a single manifest of another platform: %v", err)
	}
	if _, err := convert.IndexImage(context.Background(), single, filepath.Join(t.TempDir(), "o"), convert.IndexOptions{Platforms: other}); !errors.Is(err, convert.ErrPlatform) {
		t.Fatalf("index of a single manifest of another platform: %v", err)
	}
	hostP, _ := convert.ParsePlatforms(host)
	if _, err := convert.IndexImage(context.Background(), single, filepath.Join(t.TempDir(), "o"), convert.IndexOptions{Platforms: hostP}); err != nil {
		t.Fatalf("index of a single manifest of the host's platform: %v", err)
	}
}

func equal(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// TestIndexReportsReasons: every layer Progress reports either got a zTOC
// or says why not; a layer that fails (a "gzip" layer that is not gzip)
// is not reported as skipped with an empty reason: the indexing fails
// with its error.
func TestIndexReportsReasons(t *testing.T) {
	cases := []struct {
		name    string
		mangle  func(m *ocispec.Manifest, dir string)
		wantErr bool
	}{
		{"zstd layer skipped", func(m *ocispec.Manifest, _ string) { m.Layers[0].MediaType = ocispec.MediaTypeImageLayerZstd }, false},
		{"not gzip", func(m *ocispec.Manifest, dir string) {
			l := &m.Layers[0]
			b := []byte("not gzip at all, only text")
			l.Digest, l.Size = digest.FromBytes(b), int64(len(b))
			os.WriteFile(filepath.Join(dir, "blobs", "sha256", l.Digest.Encoded()), b, 0o644)
		}, true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			src := filepath.Join(t.TempDir(), "src")
			md, err := testimage.Layout(src, "lazysnap.test/r:1", testtar.Files([][2]string{{"a", "1"}}), testtar.Files([][2]string{{"b", "2"}}))
			if err != nil {
				t.Fatal(err)
			}
			var m ocispec.Manifest
			readLayoutJSON(t, src, md, &m)
			c.mangle(&m, src)
			b, _ := json.Marshal(m)
			nd := digest.FromBytes(b)
			os.WriteFile(filepath.Join(src, "blobs", "sha256", nd.Encoded()), b, 0o644)
			md.Digest, md.Size = nd, int64(len(b))
			top, _ := json.Marshal(ocispec.Index{Versioned: specs.Versioned{SchemaVersion: 2}, Manifests: []ocispec.Descriptor{md}})
			os.WriteFile(filepath.Join(src, "index.json"), top, 0o644)

			var reported []convert.IndexLayerReport
			_, err = convert.IndexImage(context.Background(), src, filepath.Join(t.TempDir(), "dst"), convert.IndexOptions{Parallel: 1,
				Progress: func(r convert.IndexLayerReport) { reported = append(reported, r) }})
			if (err != nil) != c.wantErr {
				t.Fatalf("err %v, want error %v", err, c.wantErr)
			}
			for _, r := range reported {
				if r.Ztoc == nil && r.Skipped == "" {
					t.Fatalf("layer %s reported without a zTOC and without a reason", r.Layer.Digest)
				}
			}
		})
	}
}
