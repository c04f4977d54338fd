package fetcher

import (
	"context"
	"io"
	"net/http"
	"sort"
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
	deliver := func(p []byte) error {
		buf = append(buf, p...)
		fn(buf)
		return nil
	}
	received := func() int64 { return int64(len(buf)) }
	err := b.do(ctx, http.MethodGet, r.String(), &consumer{received: received, read: func(resp *http.Response) error {
		got := int64(len(buf))
		return b.readStream(resp, Range{Off: off + got, Len: n - got}, deliver)
	}})
	if err != nil {
		return err
	}
	b.f.cachePut(k, buf)
	return nil
}

// readStream reads the answer to a GET of r, handing its body to deliver
// as it is read; bytes read before a failure are delivered too (their
// place is known). An error of deliver ends the attempt with that error
// (not retried).
func (b *Blob) readStream(resp *http.Response, r Range, deliver func([]byte) error) error {
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
			if derr := deliver(p[:m]); derr != nil {
				return derr
			}
			left -= int64(m)
		}
		if err != nil {
			return shortBody(err)
		}
	}
	return nil
}

// CopyStats is where CopyTo took a blob's bytes from.
type CopyStats struct {
	Cached  int64 // from the memory and disk caches
	Fetched int64 // from the registry
}

// CopyTo writes the whole blob to w, in blob order: with cached, each
// part the caches hold from there (whatever ranges earlier reads left,
// overlapping or not), and the gaps between them fetched by range;
// without, all of it fetched by range. Fetched bytes are not cached (they
// would evict what readers want), and are fetched MaxSpan at a time, so
// that memory holds one cached range or one span whatever the blob's
// size. An entry evicted between listing and reading is fetched instead.
// It serves checking a complete blob against its digest (w hashes) without
// fetching again what is cached; nothing is verified here.
func (b *Blob) CopyTo(ctx context.Context, w io.Writer, cached bool) (CopyStats, error) {
	var st CopyStats
	var have []chunkKey
	if cached {
		have = append(b.f.mem.ranges(b.desc.Digest), b.f.disk.ranges(b.desc.Digest)...)
		sort.Slice(have, func(i, j int) bool { return have[i].off < have[j].off })
	}
	sctx := b.scoped(ctx)
	for pos := int64(0); pos < b.size; {
		if err := ctx.Err(); err != nil {
			return st, err
		}
		// the cached range over pos that reaches furthest, and where the
		// next one starts; the ranges starting at or before pos are of no
		// use once pos has moved past the furthest of them
		best, next, i := -1, b.size, 0
		for ; i < len(have) && have[i].off <= pos; i++ {
			if have[i].end() > pos && (best < 0 || have[i].end() > have[best].end()) {
				best = i
			}
		}
		if i < len(have) {
			next = have[i].off
		}
		if best >= 0 {
			k := have[best]
			data, ok := b.f.cacheGet(k)
			if !ok { // evicted since it was listed
				have = append(have[:best], have[best+1:]...)
				continue
			}
			if _, err := w.Write(data[pos-k.off:]); err != nil {
				return st, err
			}
			st.Cached += k.end() - pos
			pos = k.end()
			have = have[i:]
			continue
		}
		have = have[i:]
		n := min(next-pos, b.f.cfg.MaxSpan)
		res, err := b.fetch(sctx, []Range{{Off: pos, Len: n}})
		if err != nil {
			return st, err
		}
		if _, err := w.Write(res[0]); err != nil {
			return st, err
		}
		st.Fetched += n
		pos += n
	}
	return st, nil
}
