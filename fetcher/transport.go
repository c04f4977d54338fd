package fetcher

import (
	"net/http"

	"github.com/containerd/containerd/v2/core/remotes/docker"
)

// newBlobTransport is the transport of one blob on hosts, the blob's pull
// hosts in order (transport.go's stack per host, outermost first):
//
//	mirrorTransport    each host in order; a mirror that is down rested
//	retryTransport     attempts: slot, bounds, consumer, backoff
//	hostTransport      the rest, below
func (f *Fetcher) newBlobTransport(hosts []docker.RegistryHost) http.RoundTripper {
	m := &mirrorTransport{f: f, hosts: hosts}
	for _, h := range hosts {
		m.next = append(m.next, &retryTransport{next: hostTransport(h), f: f})
	}
	return m
}

// hostTransport composes the transport of one blob on host h, outermost
// first (doc.go, Transports, says why in this order):
//
//	locationTransport  remembered redirect target; an expired one re-resolved
//	redirectTransport  follows redirects; every hop goes through the rest
//	stallTransport     the attempt's watchdog: headers wait, body stall
//	authTransport      credentials; 401 challenge -> authorizer -> resend
//	h.Client.Transport meteredTransport, Config.WrapTransport, containerd's
func hostTransport(h docker.RegistryHost) http.RoundTripper {
	client := authorizedClient(h)
	client.Transport = &stallTransport{next: client.Transport}
	client.CheckRedirect = stopAfterRedirects
	return &locationTransport{next: &redirectTransport{client: client}}
}

// authorizedClient is a copy of h's client whose transport puts h's
// credentials on every request (every redirect hop) and answers auth
// challenges: authTransport over h's client transport.
func authorizedClient(h docker.RegistryHost) *http.Client {
	client := &http.Client{}
	if h.Client != nil {
		*client = *h.Client
	}
	if client.Transport == nil {
		client.Transport = http.DefaultTransport
	}
	if h.Authorizer != nil {
		client.Transport = &authTransport{auth: h.Authorizer, next: client.Transport}
	}
	return client
}

// Compile-time interface checks.
var (
	_ http.RoundTripper = (*mirrorTransport)(nil)
	_ http.RoundTripper = (*retryTransport)(nil)
	_ http.RoundTripper = (*locationTransport)(nil)
	_ http.RoundTripper = (*redirectTransport)(nil)
	_ http.RoundTripper = (*stallTransport)(nil)
	_ http.RoundTripper = (*authTransport)(nil)
	_ http.RoundTripper = (*meteredTransport)(nil)
)
