package fetcher

import (
	"context"
	"errors"
	"net/http"
	"net/url"
	"path"
	"strings"
	"time"

	"github.com/containerd/containerd/v2/core/remotes/docker"
)

// mirrorTransport sends a request to the hosts of its registry in the
// order of hosts.toml (mirrors first, the registry last), each through
// its own transport (retryTransport over the host's stack, whose
// authorizer and client are the host's), until one answers. The request
// is addressed to the registry of the image reference, with a path under
// /v2/; each host gets it at its own scheme, host and API path, with its
// headers, and a mirror with containerd's "ns" parameter naming the
// registry. The caller chooses the hosts (their capabilities: pull hosts
// for blobs).
//
// A host that fails sends the request on to the next one; when every
// host fails, the first host's error is returned. The request context's
// error, errMultiRangeUnsupported and errHeadNoSize (the caller changes
// its requests) and a consumer's sink failure (sinkError) end it at once, as does a failure
// of a request that cannot be replayed. A mirror (a host before the last)
// that is unreachable or times out is not retried (failFast) and is passed
// over for mirrorRest; each mirror's failures that send a request on
// count in its HostStats.MirrorFallbacks.
type mirrorTransport struct {
	f     *Fetcher
	hosts []docker.RegistryHost
	next  []http.RoundTripper // per host
}

// routedHostKey carries the host (RegistryHost.Host) a request was routed
// to, for consumers that remember something per host.
type routedHostKey struct{}

func routedHost(ctx context.Context) string {
	h, _ := ctx.Value(routedHostKey{}).(string)
	return h
}

func (t *mirrorTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	ctx := req.Context()
	if req.GetBody != nil && req.Body != nil {
		req.Body.Close() // each host's attempts get theirs from GetBody
	}
	var firstErr error
	for i, h := range t.hosts {
		mirror := i < len(t.hosts)-1
		hs := t.f.host(h.Host)
		var err error
		if mirror && hs.resting() {
			// not counted as an error: no request was made
			err = &RequestError{Op: strings.ToLower(req.Method), Host: h.Host, Digest: blobDigest(req.URL.Path),
				Range: req.Header.Get("Range"), Kind: ErrUnavailable, Err: errMirrorResting}
		} else {
			var resp *http.Response
			resp, err = t.next[i].RoundTrip(t.route(req, h, mirror, hs))
			if err == nil {
				return resp, nil
			}
		}
		if ctx.Err() != nil || !hostFailure(err) {
			return nil, err
		}
		if mirror && !requestFormError(err) {
			hs.mirrorFallbacks.Add(1)
		}
		if firstErr == nil {
			firstErr = err
		}
		if !replayable(req) {
			break
		}
	}
	return nil, firstErr
}

// route is req as sent to host h.
func (t *mirrorTransport) route(req *http.Request, h docker.RegistryHost, mirror bool, hs *hostState) *http.Request {
	ctx := context.WithValue(req.Context(), routedHostKey{}, h.Host)
	if mirror {
		ctx = context.WithValue(ctx, failFastKey{}, hs.rest)
	}
	r := req.Clone(ctx)
	u := *req.URL
	u.Scheme, u.Host, u.RawPath = h.Scheme, h.Host, ""
	u.Path = path.Join("/", h.Path, strings.TrimPrefix(req.URL.Path, "/v2"))
	if isProxy(h.Host, req.URL.Host) {
		q := u.Query()
		q.Set("ns", req.URL.Host)
		u.RawQuery = q.Encode()
	}
	r.URL, r.Host = &u, ""
	for k, v := range h.Header {
		if _, ok := r.Header[k]; !ok {
			r.Header[k] = append([]string(nil), v...)
		}
	}
	if req.GetBody != nil {
		r.Body = nil // retryTransport's attempts get it from GetBody
	}
	return r
}

// hostFailure reports whether err is a host's failure, after which
// another host may do better: not the caller's cue to ask another way
// from the first host (errMultiRangeUnsupported, errHeadNoSize) nor its
// sink's failure.
func hostFailure(err error) bool {
	var se *sinkError
	return !errors.Is(err, errMultiRangeUnsupported) && !errors.Is(err, errHeadNoSize) && !errors.As(err, &se)
}

// isProxy mirrors containerd's RegistryHost.isProxy.
func isProxy(host, refHost string) bool {
	return host != refHost && (refHost != "docker.io" || host != "registry-1.docker.io")
}

// resting reports whether a mirror that failed is still passed over.
func (s *hostState) resting() bool { return time.Now().UnixNano() < s.restUntil.Load() }

// rest passes a mirror that failed over for mirrorRest.
func (s *hostState) rest() { s.restUntil.Store(time.Now().Add(mirrorRest).UnixNano()) }

// registryURL is the URL of path (under /v2/) in the registry of refHost
// as mirrorTransport takes it.
func registryURL(refHost, p string) string {
	return (&url.URL{Scheme: "https", Host: refHost, Path: path.Join("/v2", p)}).String()
}

// mirrorRest is how long a mirror that was unreachable or timed out is
// passed over for the next host (the registry itself) before it is tried
// again.
const mirrorRest = 30 * time.Second

// errMirrorResting fails an operation on a mirror passed over (mirrorRest).
var errMirrorResting = errors.New("mirror passed over: it failed less than 30s ago")
