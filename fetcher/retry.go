package fetcher

import (
	"context"
	"math/rand/v2"
	"time"
)

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
