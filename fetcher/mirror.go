package fetcher

import (
	"context"
	"errors"
	"time"
)

// onHosts runs an operation (attempt, under retrying) on the blob's pull
// hosts in order, mirrors first, until one succeeds. A host that fails
// sends the operation on to the next one; when every host fails, the
// first host's error is returned. The caller's context error, and
// errMultiRangeUnsupported (the caller changes its requests), end the
// operation at once.
func (b *Blob) onHosts(ctx context.Context, op, rng string, received func() int64, attempt func(ctx context.Context, hi int) error) error {
	var firstErr error
	for hi := range b.hosts {
		err := b.retrying(ctx, hi, op, rng, received, func(actx context.Context) error { return attempt(actx, hi) })
		if err == nil {
			return nil
		}
		if ctx.Err() != nil || errors.Is(err, errMultiRangeUnsupported) {
			return err
		}
		if firstErr == nil {
			firstErr = err
		}
	}
	return firstErr
}

// retrying runs one operation on host hi under Fetcher.attempts (retries,
// attempt bounds; a mirror that is down is not retried but rested). A
// failure on a mirror, which sends the operation on to the next host,
// counts in the mirror's HostStats.MirrorFallbacks.
func (b *Blob) retrying(ctx context.Context, hi int, op, rng string, received func() int64, attempt func(context.Context) error) error {
	h := b.hosts[hi].Host
	o := operation{op: op, host: h, digest: b.desc.Digest.String(), rng: rng, mirror: hi < len(b.hosts)-1}
	err := b.f.attempts(ctx, o, received, attempt)
	if err != nil && o.mirror && ctx.Err() == nil && !errors.Is(err, errMultiRangeUnsupported) && !errors.Is(err, errSuffixUnsupported) {
		b.f.host(h).mirrorFallbacks.Add(1)
	}
	return err
}

// resting reports whether a mirror that failed is still passed over.
func (s *hostState) resting() bool { return time.Now().UnixNano() < s.restUntil.Load() }

// rest passes a mirror that failed over for MirrorRest.
func (s *hostState) rest() { s.restUntil.Store(time.Now().Add(MirrorRest).UnixNano()) }
