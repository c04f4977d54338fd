package fetcher

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"

	"github.com/lazysnap/lazysnap/internal/descriptor"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// TestBadDescriptors: a descriptor with no or a malformed digest, a
// negative size or a malformed media type is refused by Blob, BlobWithTail
// and Fetch with ErrInvalid (and descriptor.ErrInvalid) before any request
// is sent.
func TestBadDescriptors(t *testing.T) {
	srv := newFakeRegistry(t, randBytes(1, 4<<10), nil)
	good := srv.desc()
	f := newTestFetcher(t, Config{Retries: 1})
	ops := map[string]func(ocispec.Descriptor) error{
		"Blob": func(d ocispec.Descriptor) error {
			_, err := f.Blob(context.Background(), srv.ref(), d)
			return err
		},
		"BlobWithTail": func(d ocispec.Descriptor) error {
			_, _, err := f.BlobWithTail(context.Background(), srv.ref(), d, 512)
			return err
		},
		"Fetch": func(d ocispec.Descriptor) error {
			rc, err := f.Fetch(context.Background(), srv.ref(), d)
			if err == nil {
				rc.Close()
			}
			return err
		},
	}
	for _, tc := range []struct {
		name string
		edit func(d *ocispec.Descriptor)
	}{
		{"no digest", func(d *ocispec.Descriptor) { d.Digest = "" }},
		{"md5 digest", func(d *ocispec.Descriptor) { d.Digest = "md5:d41d8cd98f00b204e9800998ecf8427e" }},
		{"garbage digest", func(d *ocispec.Descriptor) { d.Digest = "sha256:../x" }},
		{"negative size", func(d *ocispec.Descriptor) { d.Size = -1 }},
		{"no media type", func(d *ocispec.Descriptor) { d.MediaType = "" }},
		{"malformed media type", func(d *ocispec.Descriptor) { d.MediaType = "gzip" }},
	} {
		for name, op := range ops {
			t.Run(tc.name+" "+name, func(t *testing.T) {
				d := good
				tc.edit(&d)
				before := len(srv.requests())
				err := op(d)
				if !errors.Is(err, ErrInvalid) || !errors.Is(err, descriptor.ErrInvalid) {
					t.Fatalf("%s(%+v) = %v, want ErrInvalid and descriptor.ErrInvalid", name, d, err)
				}
				if n := len(srv.requests()) - before; n != 0 {
					t.Errorf("%d requests sent for an invalid descriptor", n)
				}
			})
		}
	}
}

// TestResolveBadDescriptor: a registry whose manifest answer makes a
// descriptor that is not valid (here a Content-Type that is not a media
// type) is ErrBadResponse from Resolve, not a descriptor handed on.
func TestResolveBadDescriptor(t *testing.T) {
	manifest := []byte(`{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","layers":[]}`)
	for _, tc := range []struct {
		name        string
		contentType string
		want        error
	}{
		{"valid", ocispec.MediaTypeImageManifest, nil},
		{"not a media type", "manifest", ErrBadResponse},
		{"two slashes", "application/vnd.oci/manifest", ErrBadResponse},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if !strings.Contains(r.URL.Path, "/manifests/") {
					w.WriteHeader(http.StatusOK)
					return
				}
				w.Header().Set("Content-Type", tc.contentType)
				w.Header().Set("Docker-Content-Digest", digest.FromBytes(manifest).String())
				w.Header().Set("Content-Length", strconv.Itoa(len(manifest)))
				if r.Method != http.MethodHead {
					w.Write(manifest)
				}
			}))
			defer srv.Close()
			f := newTestFetcher(t, Config{Retries: 1})
			_, d, err := f.Resolve(context.Background(), strings.TrimPrefix(srv.URL, "http://")+"/test/repo:latest")
			if tc.want == nil {
				if err != nil || d.Digest != digest.FromBytes(manifest) {
					t.Fatalf("Resolve = %+v, %v", d, err)
				}
				return
			}
			if !errors.Is(err, tc.want) || !errors.Is(err, descriptor.ErrInvalid) {
				t.Fatalf("Resolve = %+v, %v; want %v and descriptor.ErrInvalid", d, err, tc.want)
			}
		})
	}
}
