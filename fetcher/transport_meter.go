package fetcher

import (
	"io"
	"net/http"
	"sync"
)

// slotHeldKey marks a request context whose caller already holds the
// host's concurrency slot (so the transport does not take a second one).
type slotHeldKey struct{}

// meteredTransport limits concurrent requests per host and counts requests
// and response bytes.
type meteredTransport struct {
	base http.RoundTripper
	f    *Fetcher
}

func (t *meteredTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	hs := t.f.host(req.URL.Host)
	release := func() {}
	if req.Context().Value(slotHeldKey{}) == nil {
		select {
		case hs.sem <- struct{}{}:
			var once sync.Once
			release = func() { once.Do(func() { <-hs.sem }) }
		case <-req.Context().Done():
			return nil, req.Context().Err()
		}
	}
	hs.requests.Add(1)
	resp, err := t.base.RoundTrip(req)
	if err != nil {
		release()
		return nil, err
	}
	resp.Body = &meteredBody{rc: resp.Body, hs: hs, release: release}
	return resp, nil
}

type meteredBody struct {
	rc      io.ReadCloser
	hs      *hostState
	release func()
}

func (b *meteredBody) Read(p []byte) (int, error) {
	n, err := b.rc.Read(p)
	b.hs.bytes.Add(int64(n))
	if err != nil {
		b.release()
	}
	return n, err
}

func (b *meteredBody) Close() error {
	b.release()
	return b.rc.Close()
}
