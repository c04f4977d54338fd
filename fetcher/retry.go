package fetcher

import (
	"context"
	"errors"
	"math/rand/v2"
	"time"
)

// operation names one registry operation on one host, for its errors.
type operation struct {
	op, host, digest, rng string
	// mirror: a host followed by others, which is not retried when it is
	// unreachable or times out (see Blob.onHosts)
	mirror bool
}

// attempts runs one operation against one host: it takes the host's
// concurrency slot per attempt, bounds each attempt (startAttempt) and
// retries retryable failures with backoff, up to Config.Retries. The
// error is a *RequestError (or the caller's context error, or one of the
// internal errMultiRangeUnsupported and errSuffixUnsupported, which are
// not retried).
//
// With received (the bytes a stream has so far) the attempts are a
// stream's, and only attempts that received nothing count against
// Retries: the budget starts over after an attempt that made progress.
//
// A mirror (o.mirror) that is unreachable or times out is not retried:
// it is passed over for MirrorRest, and the operation moves on to the
// next host at once, so that a mirror that is down costs one attempt (at
// most one request timeout), not one per request.
func (f *Fetcher) attempts(ctx context.Context, o operation, received func() int64, attempt func(context.Context) error) error {
	hs := f.host(o.host)
	if o.mirror && hs.resting() {
		// not counted as an error: no request was made
		return &RequestError{Op: o.op, Host: o.host, Digest: o.digest, Range: o.rng, Kind: ErrUnavailable, Err: errMirrorResting}
	}
	fails := 0 // failed attempts since the last one that made progress
	for n := 1; ; n++ {
		select {
		case hs.sem <- struct{}{}:
		case <-ctx.Done():
			return ctx.Err()
		}
		var before int64
		if received != nil {
			before = received()
		}
		actx, end := f.startAttempt(ctx, received != nil)
		err := attempt(actx)
		limit := end()
		<-hs.sem
		if err == nil {
			return nil
		}
		if cerr := ctx.Err(); cerr != nil {
			return cerr
		}
		if errors.Is(err, errMultiRangeUnsupported) || errors.Is(err, errSuffixUnsupported) {
			return err
		}
		if limit != nil {
			// the attempt's own bound cut it short; what the transport
			// made of that (a cancelled request) is not the cause
			err = attemptErr(ErrTimeout, 0, limit)
		}
		if received != nil && received() > before {
			fails = 0
		}
		if o.mirror && (errors.Is(err, ErrUnavailable) || errors.Is(err, ErrTimeout)) && (received == nil || received() == before) {
			hs.rest()
			return f.requestError(o, n, err)
		}
		fails++
		if !retryable(err) || fails > f.cfg.Retries {
			return f.requestError(o, n, err)
		}
		if err := sleepCtx(ctx, f.backoff(fails)); err != nil {
			return err
		}
	}
}

// requestError is the counted *RequestError of o's last attempt.
func (f *Fetcher) requestError(o operation, attempts int, err error) error {
	re := &RequestError{Op: o.op, Host: o.host, Digest: o.digest,
		Range: o.rng, Attempts: attempts, Kind: ErrUnavailable, Err: err}
	var ae *attemptError
	if errors.As(err, &ae) {
		re.Kind, re.Status, re.Err = ae.kind, ae.status, ae.err
	}
	return f.countError(re)
}

// retry runs op (a containerd resolver call) until it succeeds, fails
// for good, or ctx ends. Each attempt is bounded by RequestTimeout, body
// included: a registry that stalls a manifest is retried, not waited on
// for as long as the caller's context lasts. After a success the
// attempt's context lives on until release is called (Fetch's body is
// read after op returns).
func (f *Fetcher) retry(ctx context.Context, op func(context.Context) error) (release func(), err error) {
	for attempt := 1; ; attempt++ {
		limit := &limitError{"request timeout", f.cfg.RequestTimeout}
		actx, cancel := context.WithTimeoutCause(ctx, f.cfg.RequestTimeout, limit)
		err := op(actx)
		if err == nil {
			return cancel, nil
		}
		timedOut := ctx.Err() == nil && context.Cause(actx) == limit
		cancel()
		if cerr := ctx.Err(); cerr != nil {
			return nil, cerr
		}
		if timedOut {
			// what the transport made of the deadline is not the cause
			err = attemptErr(ErrTimeout, 0, limit)
		}
		if !retryable(err) || attempt > f.cfg.Retries {
			return nil, err
		}
		if err := sleepCtx(ctx, f.backoff(attempt)); err != nil {
			return nil, err
		}
	}
}

// backoff returns the delay before retry number attempt (1-based):
// exponential from RetryBaseDelay, capped at 5s, with jitter in [d/2, d).
func (f *Fetcher) backoff(attempt int) time.Duration {
	d := f.cfg.RetryBaseDelay << min(attempt-1, 16)
	d = min(d, 5*time.Second)
	return d/2 + rand.N(d/2+1)
}

func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
