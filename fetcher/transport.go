package fetcher

import (
	"net/http"

	"github.com/containerd/containerd/v2/core/remotes/docker"
)

// Transports. A Blob's request to one of its hosts goes through these
// RoundTrippers, outermost first (newBlobTransport composes them; doc.go
// says why in this order):
//
//	locationTransport  a remembered redirect target; re-resolves an expired one
//	redirectTransport  follows redirects; each hop goes through the rest
//	stallTransport     the attempt's watchdog: headers wait, body stall
//	authTransport      credentials; 401 challenge -> authorizer -> resend
//	meteredTransport   per-host concurrency limit, request and byte counters
//	Config.WrapTransport (ops' timing), then containerd's transport
//
// meteredTransport and below are the host client's own transport
// (Fetcher.updateClient), shared with containerd's resolver, which does
// its own auth; the layers above are the Blob's. Retries, attempt bounds
// and mirror fallback are not RoundTrippers: an attempt includes reading
// and checking the body (a short body or a wrong Content-Range is retried,
// a stream resumes after what it received), which a RoundTripper does not
// see; they are Fetcher.attempts (retry.go) and Blob.onHosts (mirror.go).

// newBlobTransport composes the transport of one blob on host h.
func newBlobTransport(h docker.RegistryHost) http.RoundTripper {
	var hop http.RoundTripper = http.DefaultTransport
	client := &http.Client{}
	if h.Client != nil {
		*client = *h.Client
		if h.Client.Transport != nil {
			hop = h.Client.Transport
		}
	}
	if h.Authorizer != nil {
		hop = &authTransport{auth: h.Authorizer, next: hop}
	}
	client.Transport = &stallTransport{next: hop}
	client.CheckRedirect = stopAfterRedirects
	return &locationTransport{next: &redirectTransport{client: client}}
}

// Compile-time interface checks.
var (
	_ http.RoundTripper = (*locationTransport)(nil)
	_ http.RoundTripper = (*redirectTransport)(nil)
	_ http.RoundTripper = (*stallTransport)(nil)
	_ http.RoundTripper = (*authTransport)(nil)
	_ http.RoundTripper = (*meteredTransport)(nil)
)
