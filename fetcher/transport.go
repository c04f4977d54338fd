package fetcher

import (
	"net/http"

	"github.com/containerd/containerd/v2/core/remotes/docker"
)

// newBlobTransport composes the transport of one blob on host h, outermost
// first (doc.go, Transports, says why in this order):
//
//	locationTransport  remembered redirect target; an expired one re-resolved
//	redirectTransport  follows redirects; every hop goes through the rest
//	stallTransport     the attempt's watchdog: headers wait, body stall
//	authTransport      credentials; 401 challenge -> authorizer -> resend
//	h.Client.Transport meteredTransport, Config.WrapTransport, containerd's
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
