package fetcher

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"sync"

	"github.com/containerd/containerd/v2/core/remotes/docker"
	remoteerrors "github.com/containerd/containerd/v2/core/remotes/errors"
)

// CredentialSource gives registry credentials. The fetcher asks its
// sources in order (Config.Credentials, then the Docker config) before
// every request, for the image reference whose blob or manifest it fetches
// and the host the request goes to (the registry, a mirror, or blob
// storage a registry redirected to); the first source that finds
// credentials wins. refresh is set after the registry refused the
// credentials a request carried: a source that caches must read its
// credentials anew. An empty user with a secret is an identity (refresh)
// token. Sources are called concurrently and must be cheap when nothing
// changed: they run once per request.
type CredentialSource interface {
	Credentials(ctx context.Context, ref, host string, refresh bool) (user, secret string, found bool, err error)
}

// credential is one source's answer; the zero value is anonymous access.
type credential struct{ user, secret string }

// credChain is the ordered list of sources.
type credChain []CredentialSource

// lookup asks the sources in order. A failing source does not hide the
// ones after it; its error is returned only when no later source has
// credentials.
func (c credChain) lookup(ctx context.Context, ref, host string, refresh bool) (credential, error) {
	var errs []error
	for _, s := range c {
		u, p, ok, err := s.Credentials(ctx, ref, host, refresh)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if ok {
			return credential{u, p}, nil
		}
	}
	return credential{}, errors.Join(errs...)
}

type refKey struct{}

// withRef tells the authorizer which image a request is made for.
func withRef(ctx context.Context, ref string) context.Context {
	return context.WithValue(ctx, refKey{}, ref)
}

func refFrom(ctx context.Context) string {
	s, _ := ctx.Value(refKey{}).(string)
	return s
}

// maxInnerAuthorizers bounds the per-credential authorizers one host keeps
// (credentials rotate; images of one registry may use different ones).
const maxInnerAuthorizers = 16

// chainAuthorizer is the docker.Authorizer of one configured host. It
// looks the credentials up before every request (so that rotated ones are
// used by the next request) and keeps one containerd authorizer, with its
// token cache, per distinct credential: images that share credentials
// share tokens, and a credential's change starts from a clean authorizer.
// When the registry refuses the credentials a request carried, or a token
// request with them fails, it asks the sources once more with refresh set
// and retries with what they answer, if that is something else.
type chainAuthorizer struct {
	creds  credChain
	client *http.Client
	header http.Header

	mu    sync.Mutex
	tick  uint64
	inner map[credential]*innerAuthorizer
}

type innerAuthorizer struct {
	a    docker.Authorizer
	used uint64
}

var _ docker.Authorizer = (*chainAuthorizer)(nil)

func newChainAuthorizer(creds credChain, client *http.Client, header http.Header) *chainAuthorizer {
	return &chainAuthorizer{creds: creds, client: client, header: header, inner: map[credential]*innerAuthorizer{}}
}

// forCred returns the containerd authorizer of c, creating it (and
// forgetting the least recently used one past the bound).
func (a *chainAuthorizer) forCred(c credential) docker.Authorizer {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.tick++
	if in, ok := a.inner[c]; ok {
		in.used = a.tick
		return in.a
	}
	if len(a.inner) >= maxInnerAuthorizers {
		var oldest credential
		oldestUse := ^uint64(0)
		for k, v := range a.inner {
			if v.used < oldestUse {
				oldest, oldestUse = k, v.used
			}
		}
		delete(a.inner, oldest)
	}
	opts := []docker.AuthorizerOpt{docker.WithAuthClient(a.client)}
	if c != (credential{}) {
		opts = append(opts, docker.WithAuthCreds(func(string) (string, string, error) { return c.user, c.secret, nil }))
	}
	if len(a.header) != 0 {
		opts = append(opts, docker.WithAuthHeader(a.header))
	}
	in := &innerAuthorizer{a: docker.NewDockerAuthorizer(opts...), used: a.tick}
	a.inner[c] = in
	return in.a
}

// drop forgets c's authorizer: containerd's keeps a failed token request's
// error for good.
func (a *chainAuthorizer) drop(c credential) {
	a.mu.Lock()
	delete(a.inner, c)
	a.mu.Unlock()
}

func (a *chainAuthorizer) Authorize(ctx context.Context, req *http.Request) error {
	ref, host := refFrom(ctx), req.URL.Host
	// a source that fails (a broken helper) must not fail requests that
	// need no credentials: go anonymous; AddResponses reports the error
	// if the registry asks for credentials
	c, _ := a.creds.lookup(ctx, ref, host, false)
	err := a.forCred(c).Authorize(ctx, req)
	if err == nil || ctx.Err() != nil {
		return err
	}
	// a token request failed; containerd's authorizer would answer every
	// later request of the scope with this failure: start afresh
	a.drop(c)
	if !tokenRefused(err) {
		return err
	}
	// the token server refused the credentials: they may be stale
	fresh, ferr := a.creds.lookup(ctx, ref, host, true)
	if ferr != nil || fresh == c {
		return err
	}
	return a.forCred(fresh).Authorize(ctx, req)
}

// tokenRefused reports whether a token request failed because the token
// server refused the credentials (401, 403), not for want of a server.
func tokenRefused(err error) bool {
	var us remoteerrors.ErrUnexpectedStatus
	return errors.As(err, &us) && (us.StatusCode == http.StatusUnauthorized || us.StatusCode == http.StatusForbidden)
}

func (a *chainAuthorizer) AddResponses(ctx context.Context, responses []*http.Response) error {
	last := responses[len(responses)-1]
	ref, host := refFrom(ctx), last.Request.URL.Host
	c, err := a.creds.lookup(ctx, ref, host, false)
	if err != nil {
		return fmt.Errorf("credentials for %s: %w", host, err)
	}
	if refused(last) {
		for _, r := range responses[:len(responses)-1] {
			if refused(r) {
				// refused twice in one request, the second time after
				// the sources were asked anew
				return fmt.Errorf("%w: %s refused the credentials", docker.ErrInvalidAuthorization, host)
			}
		}
		fresh, err := a.creds.lookup(ctx, ref, host, true)
		if err != nil {
			return fmt.Errorf("credentials for %s: %w", host, err)
		}
		if fresh != c {
			a.drop(c)
			return a.forCred(fresh).AddResponses(ctx, responses[len(responses)-1:])
		}
	}
	return a.forCred(c).AddResponses(ctx, responses)
}

// refused reports whether resp answers a request that carried credentials.
func refused(resp *http.Response) bool {
	return resp.StatusCode == http.StatusUnauthorized && resp.Request != nil && resp.Request.Header.Get("Authorization") != ""
}
