package fetcher

import (
	"io"
	"net/http"
)

// stallTransport puts each request under the watchdog of its attempt
// (startAttempt, carried by the request context): the wait for response
// headers is watched from before the request is sent (a token fetch the
// next layer makes included), and the body, once the headers are in, is
// watched for going quiet. A request without a watchdog passes through.
// The watchdog cancels the attempt's context; the error the caller then
// sees is the transport's, and startAttempt's end reports the bound.
type stallTransport struct {
	next http.RoundTripper
}

func (t *stallTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	wd := watchdogFrom(req.Context())
	if wd == nil {
		return t.next.RoundTrip(req)
	}
	wd.awaitHeaders()
	resp, err := t.next.RoundTrip(req)
	if err != nil {
		return nil, err
	}
	wd.awaitBody()
	resp.Body = &watchedBody{ReadCloser: resp.Body, w: wd}
	return resp, nil
}

// watchedBody reports a response body's progress to its watchdog.
type watchedBody struct {
	io.ReadCloser
	w *watchdog
}

func (b *watchedBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	if n > 0 {
		b.w.progress()
	}
	return n, err
}
