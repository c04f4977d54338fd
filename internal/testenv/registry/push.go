package registry

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"

	"github.com/opencontainers/go-digest"
	specs "github.com/opencontainers/image-spec/specs-go"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// Pusher uploads blobs and manifests through the registry HTTP API
// (monolithic upload: POST .../blobs/uploads/, PUT <location>?digest=...).
type Pusher struct {
	BaseURL            string // "<scheme>://<host>"
	Client             *http.Client
	Username, Password string // basic auth, optional
	// Pack, if set, makes the SOCI pushes pack each zTOC (soci.PackZtoc)
	// and push the bytes it returns as the packed blob its descriptor
	// names (return packed: the packed zTOC; nil: the descriptor names
	// the packed zTOC, but none is pushed).
	Pack func(layer int, packed []byte) []byte
}

// Pusher returns a Pusher for this registry with its credentials.
func (r *Registry) Pusher() *Pusher {
	return &Pusher{BaseURL: r.URL(), Client: r.client, Username: r.Username, Password: r.Password}
}

// Image describes what PushImage uploaded.
type Image struct {
	Ref           string // "<host>/<repo>:<tag>"
	Manifest      ocispec.Descriptor
	ManifestBytes []byte
	Config        ocispec.Descriptor
	Layers        []ocispec.Descriptor
}

func (p *Pusher) do(ctx context.Context, method, u string, body io.Reader, size int64, hdr http.Header) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, method, u, body)
	if err != nil {
		return nil, err
	}
	if size >= 0 && body != nil {
		req.ContentLength = size
	}
	for k, v := range hdr {
		req.Header[k] = v
	}
	if p.Username != "" {
		req.SetBasicAuth(p.Username, p.Password)
	}
	c := p.Client
	if c == nil {
		c = http.DefaultClient
	}
	return c.Do(req)
}

// PushBlob uploads data as a blob of repo and returns its descriptor
// (media type left empty).
func (p *Pusher) PushBlob(ctx context.Context, repo string, data []byte) (ocispec.Descriptor, error) {
	d := digest.FromBytes(data)
	if err := p.PushBlobReader(ctx, repo, bytes.NewReader(data), int64(len(data)), d); err != nil {
		return ocispec.Descriptor{}, err
	}
	return ocispec.Descriptor{Digest: d, Size: int64(len(data))}, nil
}

// PushBlobReader uploads size bytes from rd with the given digest.
func (p *Pusher) PushBlobReader(ctx context.Context, repo string, rd io.Reader, size int64, dgst digest.Digest) error {
	resp, err := p.do(ctx, http.MethodPost, p.BaseURL+"/v2/"+repo+"/blobs/uploads/", nil, 0, nil)
	if err != nil {
		return fmt.Errorf("start upload: %w", err)
	}
	drain(resp)
	if resp.StatusCode != http.StatusAccepted {
		return fmt.Errorf("start upload of %s: status %s", dgst, resp.Status)
	}
	loc, err := resp.Location()
	if err != nil {
		return fmt.Errorf("start upload: %w", err)
	}
	q := loc.Query()
	q.Set("digest", dgst.String())
	loc.RawQuery = q.Encode()
	hdr := http.Header{"Content-Type": {"application/octet-stream"}}
	resp, err = p.do(ctx, http.MethodPut, loc.String(), rd, size, hdr)
	if err != nil {
		return fmt.Errorf("upload %s: %w", dgst, err)
	}
	drain(resp)
	if resp.StatusCode != http.StatusCreated {
		return fmt.Errorf("upload %s: status %s", dgst, resp.Status)
	}
	return nil
}

// PushManifest uploads a manifest under ref (a tag or digest).
func (p *Pusher) PushManifest(ctx context.Context, repo, ref, mediaType string, data []byte) (ocispec.Descriptor, error) {
	hdr := http.Header{"Content-Type": {mediaType}}
	u := p.BaseURL + "/v2/" + repo + "/manifests/" + url.PathEscape(ref)
	resp, err := p.do(ctx, http.MethodPut, u, bytes.NewReader(data), int64(len(data)), hdr)
	if err != nil {
		return ocispec.Descriptor{}, fmt.Errorf("put manifest: %w", err)
	}
	drain(resp)
	if resp.StatusCode != http.StatusCreated {
		return ocispec.Descriptor{}, fmt.Errorf("put manifest %s:%s: status %s", repo, ref, resp.Status)
	}
	return ocispec.Descriptor{MediaType: mediaType, Digest: digest.FromBytes(data), Size: int64(len(data))}, nil
}

// PushImage uploads the given layers (as gzip tar layers by media type; the
// bytes are not checked), a minimal image config and an OCI manifest tagged
// tag. host is the registry host name used in Image.Ref.
func (p *Pusher) PushImage(ctx context.Context, host, repo, tag string, layers ...[]byte) (Image, error) {
	img := Image{Ref: host + "/" + repo + ":" + tag}
	diffIDs := make([]digest.Digest, 0, len(layers))
	for _, l := range layers {
		d, err := p.PushBlob(ctx, repo, l)
		if err != nil {
			return Image{}, err
		}
		d.MediaType = ocispec.MediaTypeImageLayerGzip
		img.Layers = append(img.Layers, d)
		diffIDs = append(diffIDs, d.Digest) // not a real diff ID; tests only
	}
	cfg, err := json.Marshal(ocispec.Image{
		Platform: ocispec.Platform{OS: "linux", Architecture: "amd64"},
		RootFS:   ocispec.RootFS{Type: "layers", DiffIDs: diffIDs},
	})
	if err != nil {
		return Image{}, err
	}
	img.Config, err = p.PushBlob(ctx, repo, cfg)
	if err != nil {
		return Image{}, err
	}
	img.Config.MediaType = ocispec.MediaTypeImageConfig
	m, err := json.Marshal(ocispec.Manifest{
		Versioned: specs.Versioned{SchemaVersion: 2},
		MediaType: ocispec.MediaTypeImageManifest,
		Config:    img.Config,
		Layers:    img.Layers,
	})
	if err != nil {
		return Image{}, err
	}
	img.Manifest, err = p.PushManifest(ctx, repo, tag, ocispec.MediaTypeImageManifest, m)
	if err != nil {
		return Image{}, err
	}
	img.ManifestBytes = m
	return img, nil
}

// PushImage is Pusher().PushImage with this registry's host.
func (r *Registry) PushImage(ctx context.Context, repo, tag string, layers ...[]byte) (Image, error) {
	return r.Pusher().PushImage(ctx, r.Host, repo, tag, layers...)
}

// Ref returns "<host>/<repo>:<tag>" for this registry.
func (r *Registry) Ref(repo, tag string) string {
	return r.Host + "/" + strings.TrimPrefix(repo, "/") + ":" + tag
}

func drain(resp *http.Response) {
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<20))
	resp.Body.Close()
}
