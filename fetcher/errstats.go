package fetcher

import (
	"context"
	"errors"
	"sync/atomic"
)

// errorKinds names the sentinels for ErrorStats, most specific first.
var errorKinds = [...]struct {
	name string
	err  error
}{
	{"not_found", ErrNotFound},
	{"unauthorized", ErrUnauthorized},
	{"range_not_satisfied", ErrRangeNotSatisfied},
	{"bad_response", ErrBadResponse},
	{"unavailable", ErrUnavailable},
	{"timeout", ErrTimeout},
	{"digest_mismatch", ErrDigestMismatch},
	{"invalid", ErrInvalid},
}

// errorCounts counts failed operations by kind: errorKinds, then "other".
type errorCounts [len(errorKinds) + 1]atomic.Int64

// countError counts a failed registry operation by its kind and returns
// err. The caller's own cancellation or deadline is not a failure of the
// registry and is not counted.
func (f *Fetcher) countError(err error) error {
	if err == nil {
		return nil
	}
	i := len(errorKinds)
	for k, e := range errorKinds {
		if errors.Is(err, e.err) {
			i = k
			break
		}
	}
	if i == len(errorKinds) && (errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded)) {
		return err // the caller gave up; a timed-out attempt is ErrTimeout
	}
	f.errCounts[i].Add(1)
	return err
}

// ErrorStats returns how many registry operations failed, by kind: the
// sentinel an error wraps ("not_found", "unauthorized",
// "range_not_satisfied", "bad_response", "unavailable", "timeout",
// "digest_mismatch", "invalid"), or "other". An operation counts
// once per host it failed on after its retries (a mirror that fails before
// the registry succeeds counts), and once per failed Resolve or Fetch and
// per range that failed verification twice. Every kind is present, zero or
// not.
func (f *Fetcher) ErrorStats() map[string]int64 {
	out := make(map[string]int64, len(errorKinds)+1)
	for k, e := range errorKinds {
		out[e.name] = f.errCounts[k].Load()
	}
	out["other"] = f.errCounts[len(errorKinds)].Load()
	return out
}
