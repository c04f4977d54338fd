package fetcher

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"syscall"
)

// Sentinel errors. Errors returned by this package wrap one of them (test
// with errors.Is) together with the underlying cause.
var (
	// ErrNotFound: the registry has no such repository, manifest or blob.
	ErrNotFound = errors.New("fetcher: not found")
	// ErrUnauthorized: authentication failed or access was denied
	// (401/403 after the authorizer had its chance).
	ErrUnauthorized = errors.New("fetcher: unauthorized")
	// ErrRangeNotSatisfied: the requested range is outside the blob.
	ErrRangeNotSatisfied = errors.New("fetcher: range not satisfiable")
	// ErrBadResponse: the server answered with something that does not
	// match the request (wrong status, Content-Range, length or size).
	// Retried; returned when retries are exhausted.
	ErrBadResponse = errors.New("fetcher: bad response")
	// ErrUnavailable: the registry could not be reached or kept failing
	// (connection errors, resets, short bodies, 5xx, 429) after all
	// retries.
	ErrUnavailable = errors.New("fetcher: registry unavailable")
	// ErrTimeout: request attempts kept timing out (Config.RequestTimeout
	// exceeded, or a response that stalled for Config.StallTimeout) until
	// the retries ran out.
	ErrTimeout = errors.New("fetcher: request timed out")
	// ErrDigestMismatch: whole-blob content did not match its descriptor.
	ErrDigestMismatch = errors.New("fetcher: digest mismatch")
	// ErrInvalid: bad argument or configuration.
	ErrInvalid = errors.New("fetcher: invalid argument")
)

// errMultiRangeUnsupported is internal: the server did not honour a
// multi-range request, so the caller falls back to single ranges.
var errMultiRangeUnsupported = errors.New("fetcher: multi-range not supported by server")

// errSuffixUnsupported is internal: the server did not answer a suffix
// range usefully, so the caller finds the size first.
var errSuffixUnsupported = errors.New("fetcher: suffix range not supported by server")

// errHeadNoSize is internal: a HEAD did not give the blob size, so the
// caller asks with a ranged GET.
var errHeadNoSize = errors.New("fetcher: HEAD gave no blob size")

// RequestError describes a failed registry operation. It wraps a sentinel
// (Kind) and the last underlying cause (Err).
type RequestError struct {
	Op       string // "get range", "head", "resolve", ...
	Host     string // registry or storage host of the last attempt
	Digest   string // blob digest, if any
	Range    string // e.g. "bytes=0-99", if any
	Status   int    // last HTTP status, 0 if none
	Attempts int    // attempts made on the last host
	Kind     error  // one of the sentinels
	Err      error  // underlying cause, may be nil
}

func (e *RequestError) Error() string {
	var b strings.Builder
	b.WriteString(e.Kind.Error())
	b.WriteString(": ")
	b.WriteString(e.Op)
	if e.Range != "" {
		b.WriteString(" " + e.Range)
	}
	if e.Digest != "" {
		b.WriteString(" of " + e.Digest)
	}
	if e.Host != "" {
		b.WriteString(" from " + e.Host)
	}
	if e.Attempts > 1 {
		fmt.Fprintf(&b, " (%d attempts)", e.Attempts)
	}
	if e.Status != 0 {
		fmt.Fprintf(&b, ": status %d", e.Status)
	}
	if e.Err != nil {
		b.WriteString(": ")
		b.WriteString(e.Err.Error())
	}
	return b.String()
}

// Unwrap returns the sentinel and the cause.
func (e *RequestError) Unwrap() []error {
	if e.Err == nil {
		return []error{e.Kind}
	}
	return []error{e.Kind, e.Err}
}

// attemptError is what one attempt returns: a kind, a status and a cause.
type attemptError struct {
	kind   error
	status int
	err    error
}

func (e *attemptError) Error() string {
	s := e.kind.Error()
	if e.status != 0 {
		s += fmt.Sprintf(": status %d", e.status)
	}
	if e.err != nil {
		s += ": " + e.err.Error()
	}
	return s
}

func (e *attemptError) Unwrap() []error {
	if e.err == nil {
		return []error{e.kind}
	}
	return []error{e.kind, e.err}
}

func attemptErr(kind error, status int, err error) *attemptError {
	return &attemptError{kind: kind, status: status, err: err}
}

// badResponse is a convenience for ErrBadResponse with a formatted cause.
func badResponse(status int, format string, args ...any) *attemptError {
	return attemptErr(ErrBadResponse, status, fmt.Errorf(format, args...))
}

// retryable reports whether another attempt may succeed.
func retryable(err error) bool {
	switch {
	case err == nil:
		return false
	case errors.Is(err, ErrNotFound), errors.Is(err, ErrUnauthorized),
		errors.Is(err, ErrRangeNotSatisfied), errors.Is(err, ErrInvalid):
		return false
	case errors.Is(err, ErrUnavailable), errors.Is(err, ErrTimeout),
		errors.Is(err, ErrBadResponse):
		return true
	}
	return false
}

// classifyTransport turns a transport-level error of one attempt into an
// attemptError. (Callers check their own context first: a cancelled caller
// is not retried.)
func classifyTransport(err error) error {
	var ae *attemptError
	if errors.As(err, &ae) {
		return err
	}
	var ne net.Error
	switch {
	case errors.Is(err, context.DeadlineExceeded):
		return attemptErr(ErrTimeout, 0, err)
	case errors.As(err, &ne) && ne.Timeout():
		return attemptErr(ErrTimeout, 0, err)
	case errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, io.EOF),
		errors.Is(err, syscall.ECONNRESET), errors.Is(err, syscall.ECONNREFUSED),
		errors.Is(err, syscall.EPIPE), errors.Is(err, net.ErrClosed):
		return attemptErr(ErrUnavailable, 0, err)
	case errors.As(err, &ne):
		return attemptErr(ErrUnavailable, 0, err)
	}
	// Unknown transport errors (TLS failures, malformed responses) are
	// reported as unavailability; retrying them is cheap and bounded.
	return attemptErr(ErrUnavailable, 0, err)
}

// statusError maps an unexpected HTTP status to an attemptError.
func statusError(status int) *attemptError {
	switch {
	case status == 404:
		return attemptErr(ErrNotFound, status, nil)
	case status == 401 || status == 403:
		return attemptErr(ErrUnauthorized, status, nil)
	case status == 416:
		return attemptErr(ErrRangeNotSatisfied, status, nil)
	case transientStatus(status):
		return attemptErr(ErrUnavailable, status, nil)
	}
	return attemptErr(ErrBadResponse, status, nil)
}
