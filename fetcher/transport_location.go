package fetcher

import (
	"context"
	"errors"
	"net/http"
	"net/url"
	"sync"
)

// maxRedirects bounds the redirect hops of one request.
const maxRedirects = 10

// locationTransport remembers where the registry redirected a successful
// request (a blob's pre-signed storage URL) and sends the next requests
// there directly. A remembered target that answers with a status of
// expiredLocation (pre-signed URLs expire) is forgotten and the request
// goes to the registry again, within the same round trip. It keeps one
// target, so it serves one blob on one host: a Blob has one per host.
type locationTransport struct {
	next http.RoundTripper // follows redirects: redirectTransport

	mu  sync.Mutex
	loc *url.URL
}

func (t *locationTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	if loc := t.location(); loc != nil {
		// a 401 of the storage URL says it expired: not an auth challenge
		r := req.Clone(context.WithValue(req.Context(), skipChallengeKey{}, true))
		u := *loc
		r.URL, r.Host = &u, u.Host
		resp, err := t.next.RoundTrip(r)
		if err != nil {
			return nil, err
		}
		if !expiredLocation(resp.StatusCode) {
			return resp, nil
		}
		drainClose(resp)
		t.forget(loc)
	}
	resp, err := t.next.RoundTrip(req)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode/100 == 2 && resp.Request != nil && resp.Request.URL.String() != req.URL.String() {
		t.remember(resp.Request.URL)
	}
	return resp, nil
}

func (t *locationTransport) location() *url.URL {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.loc
}

func (t *locationTransport) remember(u *url.URL) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.loc = u
}

// forget drops loc unless another request has replaced it already.
func (t *locationTransport) forget(loc *url.URL) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.loc == loc {
		t.loc = nil
	}
}

// expiredLocation: statuses with which blob storage rejects an expired or
// revoked pre-signed URL.
func expiredLocation(status int) bool {
	switch status {
	case 400, 401, 403, 404, 410:
		return true
	}
	return false
}

// redirectTransport follows redirects (up to maxRedirects hops) with its
// client, whose transport sees every hop; the response is the last hop's
// (its Request is the last hop's request).
type redirectTransport struct {
	client *http.Client
}

func (t *redirectTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	return t.client.Do(req)
}

func stopAfterRedirects(_ *http.Request, via []*http.Request) error {
	if len(via) >= maxRedirects {
		return errors.New("stopped after 10 redirects")
	}
	return nil
}
