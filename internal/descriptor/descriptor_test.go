package descriptor_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/lazysnap/lazysnap/internal/descriptor"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

func TestValidate(t *testing.T) {
	good := digest.FromString("x")
	hex64 := strings.Repeat("a", 64)
	for _, tc := range []struct {
		name string
		desc ocispec.Descriptor
		ok   bool
	}{
		{"layer", ocispec.Descriptor{MediaType: ocispec.MediaTypeImageLayerGzip, Digest: good, Size: 5}, true},
		{"zero size", ocispec.Descriptor{MediaType: ocispec.MediaTypeImageConfig, Digest: good}, true},
		{"sha512", ocispec.Descriptor{MediaType: ocispec.MediaTypeImageManifest, Digest: digest.SHA512.FromString("x"), Size: 1}, true},
		{"sha384", ocispec.Descriptor{MediaType: ocispec.MediaTypeImageManifest, Digest: digest.SHA384.FromString("x"), Size: 1}, true},
		{"docker media type", ocispec.Descriptor{MediaType: "application/vnd.docker.image.rootfs.diff.tar.gzip", Digest: good}, true},
		{"no digest", ocispec.Descriptor{MediaType: ocispec.MediaTypeImageLayerGzip, Size: 5}, false},
		{"garbage digest", ocispec.Descriptor{MediaType: ocispec.MediaTypeImageLayerGzip, Digest: "zz"}, false},
		{"md5 digest", ocispec.Descriptor{MediaType: ocispec.MediaTypeImageLayerGzip, Digest: "md5:d41d8cd98f00b204e9800998ecf8427e"}, false},
		{"short hex", ocispec.Descriptor{MediaType: ocispec.MediaTypeImageLayerGzip, Digest: "sha256:abc"}, false},
		{"upper-case hex", ocispec.Descriptor{MediaType: ocispec.MediaTypeImageLayerGzip, Digest: digest.Digest("sha256:" + strings.ToUpper(hex64))}, false},
		{"path in digest", ocispec.Descriptor{MediaType: ocispec.MediaTypeImageLayerGzip, Digest: "sha256:../../" + digest.Digest(hex64[6:])}, false},
		{"negative size", ocispec.Descriptor{MediaType: ocispec.MediaTypeImageLayerGzip, Digest: good, Size: -1}, false},
		{"no media type", ocispec.Descriptor{Digest: good, Size: 1}, false},
		{"media type without subtype", ocispec.Descriptor{MediaType: "application", Digest: good}, false},
		{"media type with parameters", ocispec.Descriptor{MediaType: "application/json; charset=utf-8", Digest: good}, false},
		{"media type with two slashes", ocispec.Descriptor{MediaType: "a/b/c", Digest: good}, false},
		{"media type starting with +", ocispec.Descriptor{MediaType: "application/+json", Digest: good}, false},
		{"media type with NUL", ocispec.Descriptor{MediaType: "application/js\x00on", Digest: good}, false},
		{"media type too long", ocispec.Descriptor{MediaType: "application/" + strings.Repeat("x", 128), Digest: good}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := descriptor.Validate(tc.desc)
			if tc.ok && err != nil {
				t.Fatalf("Validate: %v", err)
			}
			if !tc.ok && !errors.Is(err, descriptor.ErrInvalid) {
				t.Fatalf("Validate = %v, want ErrInvalid", err)
			}
		})
	}
}
