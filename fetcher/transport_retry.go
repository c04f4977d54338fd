package fetcher

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"path"
	"strconv"
	"strings"
	"sync"
	"time"
)

// maxRetryAfter bounds how long a server's Retry-After makes a retry wait.
const maxRetryAfter = 10 * time.Second

// retryTransport runs a request's attempts on one host: it takes the
// host's concurrency slot per attempt, bounds each attempt
// (Fetcher.startAttempt: request timeout, wait for headers, body stall)
// and retries transient failures (retryable: connection errors, resets,
// short bodies, timeouts, 408, 429, 5xx, responses that do not match the
// request) with backoff under the request context, up to Config.Retries.
// The delay is Fetcher.backoff, or a transient status's Retry-After when
// that is longer, up to maxRetryAfter.
//
// Only replayable requests are retried: GET, HEAD and PUT, without a body
// or with one that req.GetBody gives again for each attempt.
//
// An attempt is the round trip and, for a request that carries a
// consumer (withConsumer), the consumer's reading of the response: a
// short body or a wrong Content-Range, which only reading reveals, fails
// the attempt as a transport error would. The response of a consumed
// request has its body read and closed. A request without a consumer gets
// the response of its first attempt that is not a transient status, and
// the attempt (its slot and bounds) lasts until that body is closed.
//
// A consumer with received is a stream's: its attempts have no bound as a
// whole (startAttempt), each asks for the part of its "bytes=a-b" Range
// after the bytes received so far, and only attempts that received
// nothing count against Retries.
//
// A request marked with failFast (by mirrorTransport, for a host that has
// others after it) is not retried when the host is unreachable or times
// out without progress: failFast is called and the error returned after
// that one attempt.
//
// The error is a *RequestError (counted in ErrorStats), the request
// context's error, or one of the request-form signals
// (errMultiRangeUnsupported, errSuffixUnsupported, errHeadNoSize), which
// are returned as they are: the caller asks another way.
type retryTransport struct {
	next http.RoundTripper
	f    *Fetcher
	// sleep waits out a backoff; sleepCtx but in tests
	sleep func(context.Context, time.Duration) error
}

// consumer is what an operation does with each response of its request.
type consumer struct {
	// read checks a response and reads its body, keeping what it wants;
	// an error fails the attempt (and is retried when retryable)
	read func(*http.Response) error
	// received, for a stream, is the number of bytes it has so far
	received func() int64
}

type consumerKey struct{}

// withConsumer attaches c to the requests made with ctx (retryTransport).
func withConsumer(ctx context.Context, c *consumer) context.Context {
	return context.WithValue(ctx, consumerKey{}, c)
}

// failFastKey marks a request not retried when its host is down; the
// value is called when that happens.
type failFastKey struct{}

func (t *retryTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	ctx := req.Context()
	c, _ := ctx.Value(consumerKey{}).(*consumer)
	var received func() int64
	if c != nil {
		received = c.received
	}
	failFast, _ := ctx.Value(failFastKey{}).(func())
	hs := t.f.host(req.URL.Host)
	replay := replayable(req)
	fails := 0 // failed attempts since the last one that made progress
	for n := 1; ; n++ {
		select {
		case hs.sem <- struct{}{}:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		var before int64
		if received != nil {
			before = received()
		}
		actx, end := t.f.startAttempt(ctx, received != nil)
		release := func() error {
			limit := end()
			<-hs.sem
			return limit
		}
		resp, err := t.attempt(actx, req, n, before, c)
		if err == nil {
			if c != nil {
				release()
				return resp, nil
			}
			resp.Body = &attemptBody{ReadCloser: resp.Body, end: func() { release() }}
			return resp, nil
		}
		limit := release()
		if cerr := ctx.Err(); cerr != nil {
			return nil, cerr
		}
		if requestFormError(err) {
			return nil, err
		}
		if limit != nil {
			// the attempt's own bound cut it short; what the transport
			// made of that (a cancelled request) is not the cause
			err = attemptErr(ErrTimeout, 0, limit)
		}
		progressed := received != nil && received() > before
		if progressed {
			fails = 0
		}
		if failFast != nil && !progressed && (errors.Is(err, ErrUnavailable) || errors.Is(err, ErrTimeout)) {
			failFast()
			return nil, t.f.requestError(req, n, err)
		}
		fails++
		if !replay || !retryable(err) || fails > t.f.cfg.Retries {
			return nil, t.f.requestError(req, n, err)
		}
		d := t.f.backoff(fails)
		if resp != nil {
			d = max(d, retryAfter(resp.Header, time.Now()))
		}
		sleep := t.sleep
		if sleep == nil {
			sleep = sleepCtx
		}
		if err := sleep(ctx, d); err != nil {
			return nil, err
		}
	}
}

// attempt is attempt n of req under actx: the round trip and the
// consumer's reading. On failure the response is returned too when there
// was one (for its Retry-After), its body closed.
func (t *retryTransport) attempt(actx context.Context, req *http.Request, n int, received int64, c *consumer) (*http.Response, error) {
	r := req.Clone(actx)
	if req.GetBody != nil && (n > 1 || req.Body == nil) {
		body, err := req.GetBody()
		if err != nil {
			return nil, attemptErr(ErrInvalid, 0, fmt.Errorf("request body: %w", err))
		}
		r.Body = body
	}
	if received > 0 {
		rng, ok := resumeRange(req.Header.Get("Range"), received)
		if !ok {
			return nil, attemptErr(ErrInvalid, 0, fmt.Errorf("cannot resume Range %q", req.Header.Get("Range")))
		}
		r.Header.Set("Range", rng)
	}
	resp, err := t.next.RoundTrip(r)
	if err != nil {
		return nil, classifyTransport(err)
	}
	if transientStatus(resp.StatusCode) {
		drainClose(resp)
		return resp, statusError(resp.StatusCode)
	}
	if c == nil {
		return resp, nil
	}
	defer drainClose(resp)
	if err := c.read(resp); err != nil {
		return nil, err
	}
	resp.Body = http.NoBody
	return resp, nil
}

// transientStatus: statuses another attempt may not get (statusError
// makes them ErrUnavailable).
func transientStatus(status int) bool {
	return status == http.StatusRequestTimeout || status == http.StatusTooManyRequests || status >= 500
}

// replayable reports whether req may be sent again: an idempotent method
// (GET, HEAD, PUT) whose body, if any, req.GetBody gives again.
func replayable(req *http.Request) bool {
	switch req.Method {
	case http.MethodGet, http.MethodHead, http.MethodPut:
	default:
		return false
	}
	return req.Body == nil || req.Body == http.NoBody || req.GetBody != nil
}

// retryAfter is the wait a Retry-After header asks for (delay seconds or
// an HTTP date), at most maxRetryAfter; 0 when there is none.
func retryAfter(h http.Header, now time.Time) time.Duration {
	v := strings.TrimSpace(h.Get("Retry-After"))
	if v == "" {
		return 0
	}
	var d time.Duration
	if s, err := strconv.ParseInt(v, 10, 64); err == nil {
		if s > int64(maxRetryAfter/time.Second) {
			return maxRetryAfter
		}
		d = time.Duration(s) * time.Second
	} else if at, err := http.ParseTime(v); err == nil {
		d = at.Sub(now)
	}
	return min(max(d, 0), maxRetryAfter)
}

// resumeRange is the Range "bytes=a-b" less its first got bytes.
func resumeRange(rng string, got int64) (string, bool) {
	s, ok := strings.CutPrefix(rng, "bytes=")
	if !ok {
		return "", false
	}
	as, bs, ok := strings.Cut(s, "-")
	if !ok {
		return "", false
	}
	a, err1 := strconv.ParseInt(as, 10, 64)
	b, err2 := strconv.ParseInt(bs, 10, 64)
	if err1 != nil || err2 != nil || a+got > b {
		return "", false
	}
	return fmt.Sprintf("bytes=%d-%d", a+got, b), true
}

// requestFormError: the host did not serve this form of request (the
// caller asks another way); not the host's failure, not retried.
func requestFormError(err error) bool {
	return errors.Is(err, errMultiRangeUnsupported) || errors.Is(err, errSuffixUnsupported) || errors.Is(err, errHeadNoSize)
}

// requestError is the counted *RequestError of req's last attempt.
func (f *Fetcher) requestError(req *http.Request, attempts int, err error) error {
	re := &RequestError{Op: strings.ToLower(req.Method), Host: req.URL.Host, Digest: blobDigest(req.URL.Path),
		Range: req.Header.Get("Range"), Attempts: attempts, Kind: ErrUnavailable, Err: err}
	var ae *attemptError
	if errors.As(err, &ae) {
		re.Kind, re.Status, re.Err = ae.kind, ae.status, ae.err
	}
	return f.countError(re)
}

// blobDigest is the digest of a blob URL's path (.../blobs/<digest>).
func blobDigest(p string) string {
	if path.Base(path.Dir(p)) != "blobs" {
		return ""
	}
	return path.Base(p)
}

// attemptBody ends its attempt when it is closed or read to its end.
type attemptBody struct {
	io.ReadCloser
	end  func()
	once sync.Once
}

func (b *attemptBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	if err == io.EOF {
		b.once.Do(b.end)
	}
	return n, err
}

func (b *attemptBody) Close() error {
	err := b.ReadCloser.Close()
	b.once.Do(b.end)
	return err
}
