package fetcher

import (
	"context"
	"errors"
	"time"
)

// onHosts runs an operation (attempt, under Fetcher.attempts: retries and
// attempt bounds) on the blob's pull hosts in order, mirrors first, until
// one succeeds. A host that fails sends the operation on to the next one;
// when every host fails, the first host's error is returned. The caller's
// context error, and errMultiRangeUnsupported (the caller changes its
// requests), end the operation at once. Each failure of a mirror that
// sends the operation on counts in its HostStats.MirrorFallbacks.
func (b *Blob) onHosts(ctx context.Context, op, rng string, received func() int64, attempt func(ctx context.Context, hi int) error) error {
	var firstErr error
	for hi, h := range b.hosts {
		o := operation{op: op, host: h.Host, digest: b.desc.Digest.String(), rng: rng, mirror: hi < len(b.hosts)-1}
		err := b.f.attempts(ctx, o, received, func(actx context.Context) error { return attempt(actx, hi) })
		if err == nil {
			return nil
		}
		if o.mirror && ctx.Err() == nil && !errors.Is(err, errMultiRangeUnsupported) && !errors.Is(err, errSuffixUnsupported) {
			b.f.host(h.Host).mirrorFallbacks.Add(1)
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

// resting reports whether a mirror that failed is still passed over.
func (s *hostState) resting() bool { return time.Now().UnixNano() < s.restUntil.Load() }

// rest passes a mirror that failed over for MirrorRest.
func (s *hostState) rest() { s.restUntil.Store(time.Now().Add(MirrorRest).UnixNano()) }
