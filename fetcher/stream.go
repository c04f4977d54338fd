package fetcher

import (
	"context"
	"io"
	"net/http"
)

// streamPiece is the most StreamRange hands over at once.
const streamPiece = 64 << 10

// StreamRange reads the n bytes at off like ReadRange, but calls fn while
// they arrive, every 64 KiB or so, with the bytes received so far (a
// prefix of the range that grows from call to call), so that a caller can
// use the start of a large range before its end has come. A failed
// attempt is retried (with the usual backoff, then on the next host) from
// the first byte not yet received. An attempt is not bounded as a whole:
// it fails when the response headers take longer than
// Config.RequestTimeout or the body stalls for Config.StallTimeout, and
// attempts that received bytes before failing do not count against
// Config.Retries. The whole range is cached at the end;
// a cached range is one call of fn. Concurrent calls for the same range
// are not merged (ReadRange does that). fn must not keep or modify the
// slice.
func (b *Blob) StreamRange(ctx context.Context, off, n int64, fn func(p []byte)) error {
	r := Range{Off: off, Len: n}
	if err := b.check(r); err != nil {
		return err
	}
	k := b.key(r)
	if d, ok := b.f.cacheGet(k); ok {
		fn(d)
		return nil
	}
	b.f.misses.Add(1)
	ctx = b.scoped(ctx)
	buf := make([]byte, 0, n)
	deliver := func(p []byte) {
		buf = append(buf, p...)
		fn(buf)
	}
	var firstErr error
	for hi := range b.hosts {
		received := func() int64 { return int64(len(buf)) }
		err := b.retrying(ctx, hi, "get", r.String(), received, func(actx context.Context) error {
			got := int64(len(buf))
			return b.streamOnce(actx, hi, Range{Off: off + got, Len: n - got}, deliver)
		})
		if err == nil {
			b.f.cachePut(k, buf)
			return nil
		}
		if ctx.Err() != nil {
			return err
		}
		if firstErr == nil {
			firstErr = err
		}
	}
	return firstErr
}

// streamOnce is one GET of r whose body goes to deliver as it is read;
// bytes read before a failure are delivered too (their place is known).
func (b *Blob) streamOnce(ctx context.Context, hi int, r Range, deliver func([]byte)) error {
	resp, err := b.send(ctx, hi, http.MethodGet, r.String())
	if err != nil {
		return err
	}
	defer drainClose(resp)
	switch resp.StatusCode {
	case http.StatusPartialContent:
		cr, err := b.contentRange(resp.Header.Get("Content-Range"))
		if err != nil {
			return err
		}
		if cr != r {
			return badResponse(206, "Content-Range %q does not match requested %s", resp.Header.Get("Content-Range"), r)
		}
		if resp.ContentLength >= 0 && resp.ContentLength != cr.Len {
			return badResponse(206, "Content-Length %d for Content-Range of %d bytes", resp.ContentLength, cr.Len)
		}
	case http.StatusOK:
		// Range ignored: the whole blob, from which r is cut
		if resp.ContentLength != b.size {
			return badResponse(200, "server ignored Range %s and sent %d bytes (Content-Length) for a blob of %d", r, resp.ContentLength, b.size)
		}
		if r.Off > b.f.cfg.MaxDiscard {
			return badResponse(200, "server ignored Range %s and sent the whole blob", r)
		}
		if _, err := io.CopyN(io.Discard, resp.Body, r.Off); err != nil {
			return shortBody(err)
		}
	case http.StatusRequestedRangeNotSatisfiable:
		return attemptErr(ErrRangeNotSatisfied, resp.StatusCode, nil)
	default:
		return statusError(resp.StatusCode)
	}
	p := make([]byte, min(streamPiece, r.Len))
	for left := r.Len; left > 0; {
		m, err := io.ReadFull(resp.Body, p[:min(int64(len(p)), left)])
		if m > 0 {
			deliver(p[:m])
			left -= int64(m)
		}
		if err != nil {
			return shortBody(err)
		}
	}
	return nil
}
