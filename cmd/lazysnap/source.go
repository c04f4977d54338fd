package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"runtime"

	"github.com/lazysnap/lazysnap/fetcher"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// fetcherSource is the layerSource of a real registry.
type fetcherSource struct{ f *fetcher.Fetcher }

var _ layerSource = fetcherSource{}

func (s fetcherSource) Blob(ctx context.Context, ref string, desc ocispec.Descriptor) (blob, error) {
	return s.f.Blob(ctx, ref, desc)
}

// Layer resolves ref (picking this platform's manifest from an index) and
// returns the descriptor of layer dg with its annotations.
func (s fetcherSource) Layer(ctx context.Context, ref string, dg digest.Digest) (ocispec.Descriptor, error) {
	_, desc, err := s.f.Resolve(ctx, ref)
	if err != nil {
		return ocispec.Descriptor{}, err
	}
	for range 4 { // an index of indexes is allowed, but not forever
		var doc struct {
			MediaType string               `json:"mediaType"`
			Manifests []ocispec.Descriptor `json:"manifests"`
			Layers    []ocispec.Descriptor `json:"layers"`
		}
		if err := s.fetchJSON(ctx, ref, desc, &doc); err != nil {
			return ocispec.Descriptor{}, err
		}
		if len(doc.Manifests) == 0 {
			for _, l := range doc.Layers {
				if l.Digest == dg {
					return l, nil
				}
			}
			return ocispec.Descriptor{}, fmt.Errorf("layer %s is not in %s", dg, ref)
		}
		desc = pickPlatform(doc.Manifests)
	}
	return ocispec.Descriptor{}, fmt.Errorf("%s: nested indexes too deep", ref)
}

func pickPlatform(ms []ocispec.Descriptor) ocispec.Descriptor {
	for _, m := range ms {
		if m.Platform != nil && m.Platform.OS == runtime.GOOS && m.Platform.Architecture == runtime.GOARCH {
			return m
		}
	}
	return ms[0]
}

func (s fetcherSource) fetchJSON(ctx context.Context, ref string, desc ocispec.Descriptor, v any) error {
	const maxManifest = 8 << 20
	if desc.Size > maxManifest {
		return fmt.Errorf("%s: manifest %s is %d bytes", ref, desc.Digest, desc.Size)
	}
	rc, err := s.f.Fetch(ctx, ref, desc)
	if err != nil {
		return err
	}
	defer rc.Close()
	b, err := io.ReadAll(io.LimitReader(rc, maxManifest))
	if err != nil {
		return err
	}
	if err := json.Unmarshal(b, v); err != nil {
		return fmt.Errorf("%s: manifest %s: %w", ref, desc.Digest, err)
	}
	return nil
}
