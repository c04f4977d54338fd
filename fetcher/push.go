package fetcher

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"path"
	"strings"

	"github.com/containerd/containerd/v2/core/remotes/docker"
	"github.com/containerd/errdefs"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// maxReferrers caps the image index Referrers reads.
const maxReferrers = 4 << 20

// Push uploads data, the content desc names, to the repository of ref: a
// blob, or a manifest or index (by desc's media type), which is tagged
// with ref's tag when ref has one and stored by digest otherwise. Content
// the registry already has is not uploaded again. It needs a host of the
// registry with the push capability (hosts.toml); a refusal, by the hosts
// configuration or the registry, is ErrUnauthorized.
func (f *Fetcher) Push(ctx context.Context, ref string, desc ocispec.Descriptor, data []byte) error {
	if desc.Size != int64(len(data)) || desc.Digest != digest.FromBytes(data) {
		return fmt.Errorf("%w: push %s: data does not match descriptor %s", ErrInvalid, ref, desc.Digest)
	}
	_, err := f.retry(ctx, func(ctx context.Context) error {
		p, err := f.resolver.Pusher(f.refCtx(ctx, ref), ref)
		if err != nil {
			return mapPushErr(err)
		}
		w, err := p.Push(f.refCtx(ctx, ref), desc)
		if errdefs.IsAlreadyExists(err) {
			return nil
		}
		if err != nil {
			return mapPushErr(err)
		}
		defer w.Close()
		if _, err := io.Copy(w, bytes.NewReader(data)); err != nil {
			return mapPushErr(err)
		}
		if err := w.Commit(f.refCtx(ctx, ref), desc.Size, desc.Digest); err != nil && !errdefs.IsAlreadyExists(err) {
			return mapPushErr(err)
		}
		return nil
	})
	if err != nil {
		return f.countError(opError("push "+ref, refHostname(ref), desc.Digest.String(), err))
	}
	return nil
}

// mapPushErr is mapContainerdErr for pushes: no push host is a refusal.
func mapPushErr(err error) error {
	if errdefs.IsNotFound(err) && strings.Contains(err.Error(), "no push hosts") {
		return attemptErr(ErrUnauthorized, 0, fmt.Errorf("no host has the push capability (add \"push\" to capabilities in its hosts.toml): %w", err))
	}
	return mapContainerdErr(err)
}

// Referrers reads the distribution-spec referrers API of the repository
// of ref for subject (GET /v2/<name>/referrers/<digest>, filtered by
// artifactType when it is set; the registry may ignore the filter) and
// returns the image index it answers, unparsed, at most maxReferrers
// bytes. A registry without the API answers 404: ErrNotFound, upon which
// callers use the referrers tag schema (tag sha256-<hex>) instead.
func (f *Fetcher) Referrers(ctx context.Context, ref string, subject digest.Digest, artifactType string) ([]byte, error) {
	if err := subject.Validate(); err != nil {
		return nil, fmt.Errorf("%w: referrers of %q: %w", ErrInvalid, subject, err)
	}
	refHost, repo, all, err := f.hostsOf(ref)
	if err != nil {
		return nil, err
	}
	var errs []error
	for _, h := range all {
		if !h.Capabilities.Has(docker.HostCapabilityResolve) {
			continue
		}
		q := url.Values{}
		if artifactType != "" {
			q.Set("artifactType", artifactType)
		}
		if isProxy(h.Host, refHost) {
			q.Set("ns", refHost)
		}
		u := h.Scheme + "://" + h.Host + path.Join("/", h.Path, repo, "referrers", subject.String())
		if len(q) > 0 {
			u += "?" + q.Encode()
		}
		body, err := f.getIndex(withRef(ctx, ref), h, u)
		if err == nil {
			return body, nil
		}
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		var re *RequestError
		if errors.As(err, &re) { // counted by retryTransport
			re.Op, re.Digest = "referrers "+ref, subject.String()
		}
		errs = append(errs, err)
		if errors.Is(err, ErrNotFound) {
			break // the registry's answer, not a host's failure
		}
	}
	if len(errs) == 0 {
		return nil, fmt.Errorf("%w: no resolve hosts configured for %s", ErrInvalid, refHost)
	}
	return nil, errors.Join(errs...)
}

// getIndex GETs an image index from host h, answering auth challenges
// (authorizedClient) and following redirects, with retries
// (retryTransport).
func (f *Fetcher) getIndex(ctx context.Context, h docker.RegistryHost, u string) ([]byte, error) {
	var b []byte
	ctx = withConsumer(ctx, &consumer{read: func(resp *http.Response) error {
		if resp.StatusCode != http.StatusOK {
			return statusError(resp.StatusCode)
		}
		var err error
		b, err = io.ReadAll(io.LimitReader(resp.Body, maxReferrers+1))
		if err != nil {
			return classifyTransport(err)
		}
		if len(b) > maxReferrers {
			return badResponse(resp.StatusCode, "referrers index over %d bytes", maxReferrers)
		}
		return nil
	}})
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	for k, v := range h.Header {
		req.Header[k] = append([]string(nil), v...)
	}
	req.Header.Set("Accept", ocispec.MediaTypeImageIndex)
	rt := &retryTransport{next: &redirectTransport{client: authorizedClient(h)}, f: f}
	resp, err := rt.RoundTrip(req)
	if err != nil {
		return nil, err
	}
	resp.Body.Close()
	return b, nil
}
