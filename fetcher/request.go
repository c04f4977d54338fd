package fetcher

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"mime"
	"mime/multipart"
	"net/http"
	"strconv"
	"strings"
	"sync"
)

// maxDrain is how much of an unwanted 200 body tail is read so that the
// connection can be reused (and a pull-through cache can finish storing).
const maxDrain = 1 << 20

// fetch returns the bytes of spans (sorted, disjoint), trying the pull
// hosts in order (mirrors first), each with retries. Several spans go in
// one multi-range request unless the first host is known not to support
// it; a host that turns out not to support it is remembered and the spans
// are fetched one by one.
func (b *Blob) fetch(ctx context.Context, spans []Range) ([][]byte, error) {
	if len(spans) > 1 && (b.f.cfg.MaxRangesPerRequest == 1 || b.f.host(b.hosts[0].Host).noMultiRange.Load()) {
		return b.fetchEach(ctx, spans)
	}
	var res [][]byte
	err := b.do(ctx, http.MethodGet, rangeHeader(spans), &consumer{read: func(resp *http.Response) error {
		var err error
		res, err = b.readRanges(resp, spans)
		if errors.Is(err, errMultiRangeUnsupported) {
			b.f.host(routedHost(resp.Request.Context())).noMultiRange.Store(true)
		}
		return err
	}})
	if errors.Is(err, errMultiRangeUnsupported) {
		return b.fetchEach(ctx, spans)
	}
	if err != nil {
		return nil, err
	}
	return res, nil
}

// fetchEach fetches spans with one request each, concurrently (bounded by
// the per-host limit).
func (b *Blob) fetchEach(ctx context.Context, spans []Range) ([][]byte, error) {
	out := make([][]byte, len(spans))
	errs := make([]error, len(spans))
	var wg sync.WaitGroup
	for i, s := range spans {
		wg.Add(1)
		go func() {
			defer wg.Done()
			res, err := b.fetch(ctx, []Range{s})
			if err == nil {
				out[i] = res[0]
			}
			errs[i] = err
		}()
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			return nil, err
		}
	}
	return out, nil
}

// do sends one request for the blob (method, Range rng) through the
// blob's transport (newBlobTransport: hosts in order, retries, redirects,
// watchdog, auth), c reading each attempt's response.
func (b *Blob) do(ctx context.Context, method, rng string, c *consumer) error {
	req, err := http.NewRequestWithContext(withConsumer(ctx, c), method, b.url, nil)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	if rng != "" {
		req.Header.Set("Range", rng)
	}
	req.Header.Set("Accept-Encoding", "identity")
	resp, err := b.tr.RoundTrip(req)
	if err != nil {
		return err
	}
	return resp.Body.Close()
}

// readRanges checks and parses the answer to a GET of spans.
func (b *Blob) readRanges(resp *http.Response, spans []Range) ([][]byte, error) {
	switch resp.StatusCode {
	case http.StatusPartialContent:
		mt, params, _ := mime.ParseMediaType(resp.Header.Get("Content-Type"))
		if mt == "multipart/byteranges" {
			return b.readMultipart(resp, params["boundary"], spans)
		}
		return b.readSinglePart(resp, spans)
	case http.StatusOK:
		if len(spans) > 1 {
			// Never download a whole blob to answer a multi-range request.
			return nil, errMultiRangeUnsupported
		}
		return b.readWhole(resp, spans[0])
	case http.StatusRequestedRangeNotSatisfiable:
		if len(spans) > 1 {
			return nil, errMultiRangeUnsupported
		}
		return nil, attemptErr(ErrRangeNotSatisfied, resp.StatusCode, fmt.Errorf("blob size %d", b.size))
	}
	return nil, statusError(resp.StatusCode)
}

// readSinglePart reads a 206 with one Content-Range. For a single range it
// must be exactly the requested range; for a multi-range request it is
// accepted only when that range covers all spans.
func (b *Blob) readSinglePart(resp *http.Response, spans []Range) ([][]byte, error) {
	cr, err := b.contentRange(resp.Header.Get("Content-Range"))
	if err != nil {
		return nil, err
	}
	first, last := spans[0], spans[len(spans)-1]
	if len(spans) == 1 {
		if cr != first {
			return nil, badResponse(206, "Content-Range %q does not match requested %s", resp.Header.Get("Content-Range"), first)
		}
	} else if cr.Off > first.Off || cr.End() < last.End() || cr.Len > last.End()-first.Off+b.f.cfg.MaxDiscard {
		drainClose(resp)
		return nil, errMultiRangeUnsupported
	}
	if resp.ContentLength >= 0 && resp.ContentLength != cr.Len {
		return nil, badResponse(206, "Content-Length %d for Content-Range of %d bytes", resp.ContentLength, cr.Len)
	}
	out := make([][]byte, len(spans))
	if _, err := extract(resp.Body, cr, spans, out); err != nil {
		return nil, err
	}
	return out, nil
}

// readWhole handles a 200 (Range ignored) to a single-range request: the
// body must be the whole blob (Content-Length equal to the blob size); the
// wanted bytes are cut out of it.
func (b *Blob) readWhole(resp *http.Response, s Range) ([][]byte, error) {
	if resp.ContentLength != b.size {
		return nil, badResponse(200, "server ignored Range %s and sent %d bytes (Content-Length) for a blob of %d", s, resp.ContentLength, b.size)
	}
	if s.Off > b.f.cfg.MaxDiscard {
		return nil, badResponse(200, "server ignored Range %s and sent the whole blob", s)
	}
	if _, err := io.CopyN(io.Discard, resp.Body, s.Off); err != nil {
		return nil, shortBody(err)
	}
	buf := make([]byte, s.Len)
	if _, err := io.ReadFull(resp.Body, buf); err != nil {
		return nil, shortBody(err)
	}
	_, _ = io.CopyN(io.Discard, resp.Body, maxDrain)
	return [][]byte{buf}, nil
}

// readMultipart reads a multipart/byteranges body. Each part must match
// its Content-Range in length, overlap the requested extent and be at most
// MaxDiscard larger than it; each span must lie within one part.
func (b *Blob) readMultipart(resp *http.Response, boundary string, spans []Range) ([][]byte, error) {
	if boundary == "" {
		return nil, badResponse(206, "multipart response without boundary")
	}
	lo, hi := spans[0].Off, spans[len(spans)-1].End()
	out := make([][]byte, len(spans))
	covered := 0
	mr := multipart.NewReader(resp.Body, boundary)
	for covered < len(spans) {
		p, err := mr.NextRawPart()
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, shortBody(err)
		}
		cr, err := b.contentRange(p.Header.Get("Content-Range"))
		if err != nil {
			return nil, err
		}
		if cr.End() <= lo || cr.Off >= hi || cr.Len > hi-lo+b.f.cfg.MaxDiscard {
			return nil, badResponse(206, "part %s outside requested %s", cr, rangeHeader(spans))
		}
		n, err := extract(p, cr, spans, out)
		if err != nil {
			return nil, err
		}
		covered += n
	}
	if covered < len(spans) {
		return nil, badResponse(206, "multipart response covers %d of %d ranges", covered, len(spans))
	}
	return out, nil
}

// extract reads exactly cr.Len bytes of a body or part that holds the blob
// bytes cr, keeping (in out[i]) the spans that lie within cr and are not
// yet filled and discarding the rest, then checks that nothing follows. It
// returns how many spans it filled.
func extract(r io.Reader, cr Range, spans []Range, out [][]byte) (int, error) {
	pos, filled := cr.Off, 0
	for i, s := range spans {
		if out[i] != nil || s.Off < pos || s.End() > cr.End() {
			continue
		}
		if _, err := io.CopyN(io.Discard, r, s.Off-pos); err != nil {
			return 0, shortBody(err)
		}
		buf := make([]byte, s.Len)
		if _, err := io.ReadFull(r, buf); err != nil {
			return 0, shortBody(err)
		}
		out[i] = buf
		pos = s.End()
		filled++
	}
	if _, err := io.CopyN(io.Discard, r, cr.End()-pos); err != nil {
		return 0, shortBody(err)
	}
	var one [1]byte
	if m, err := r.Read(one[:]); m > 0 {
		return 0, badResponse(206, "body longer than its Content-Range %s", cr)
	} else if err != nil && err != io.EOF {
		return 0, shortBody(err)
	}
	return filled, nil
}

// shortBody classifies a body read error (EOF before the announced length,
// reset, timeout) as retryable.
func shortBody(err error) error {
	if err == io.EOF {
		err = io.ErrUnexpectedEOF
	}
	return classifyTransport(err)
}

// contentRange parses "bytes a-b/total" and checks total against the blob
// size.
func (b *Blob) contentRange(v string) (Range, error) {
	r, total, err := parseContentRange(v)
	if err != nil {
		return Range{}, badResponse(206, "%v", err)
	}
	if total >= 0 && b.size > 0 && total != b.size {
		return Range{}, badResponse(206, "Content-Range %q: blob size is %d", v, b.size)
	}
	return r, nil
}

// parseContentRange parses "bytes a-b/total" (total may be "*": -1).
func parseContentRange(v string) (Range, int64, error) {
	s, ok := strings.CutPrefix(v, "bytes ")
	if !ok {
		return Range{}, 0, fmt.Errorf("bad Content-Range %q", v)
	}
	rs, ts, ok := strings.Cut(s, "/")
	if !ok {
		return Range{}, 0, fmt.Errorf("bad Content-Range %q", v)
	}
	as, bs, ok := strings.Cut(rs, "-")
	if !ok {
		return Range{}, 0, fmt.Errorf("bad Content-Range %q", v)
	}
	a, err1 := strconv.ParseInt(as, 10, 64)
	e, err2 := strconv.ParseInt(bs, 10, 64)
	if err1 != nil || err2 != nil || a < 0 || e < a || e == math.MaxInt64 { // e+1 must not overflow
		return Range{}, 0, fmt.Errorf("bad Content-Range %q", v)
	}
	total := int64(-1)
	if ts != "*" {
		t, err := strconv.ParseInt(ts, 10, 64)
		if err != nil || t <= e {
			return Range{}, 0, fmt.Errorf("bad Content-Range %q", v)
		}
		total = t
	}
	return Range{Off: a, Len: e - a + 1}, total, nil
}

func rangeHeader(spans []Range) string {
	var sb strings.Builder
	sb.WriteString("bytes=")
	for i, s := range spans {
		if i > 0 {
			sb.WriteByte(',')
		}
		fmt.Fprintf(&sb, "%d-%d", s.Off, s.End()-1)
	}
	return sb.String()
}

// readSuffix reads the last n bytes of a blob of unknown size with one
// suffix-range request, sets b.size from its Content-Range and caches the
// bytes. A server that ignores the range (200) gives the size only: then
// the tail is nil unless the whole blob fits in n. errSuffixUnsupported
// means the server does not serve suffix ranges usefully.
func (b *Blob) readSuffix(ctx context.Context, n int64) ([]byte, error) {
	rng := fmt.Sprintf("bytes=-%d", n)
	var tail []byte
	err := b.do(ctx, http.MethodGet, rng, &consumer{read: func(resp *http.Response) error {
		var err error
		tail, err = b.readSuffixResponse(resp, rng, n)
		return err
	}})
	if err != nil {
		return nil, err
	}
	if tail != nil {
		b.f.cachePut(b.key(Range{Off: b.size - int64(len(tail)), Len: int64(len(tail))}), tail)
	}
	return tail, nil
}

func (b *Blob) readSuffixResponse(resp *http.Response, rng string, n int64) ([]byte, error) {
	switch resp.StatusCode {
	case http.StatusPartialContent:
		cr, total, err := parseContentRange(resp.Header.Get("Content-Range"))
		switch {
		case err != nil, total < 0 || cr.End() != total || cr.Len > n || (cr.Len < n && cr.Off != 0):
			return nil, fmt.Errorf("%w: Content-Range %q for %s", errSuffixUnsupported, resp.Header.Get("Content-Range"), rng)
		case resp.ContentLength >= 0 && resp.ContentLength != cr.Len:
			return nil, badResponse(206, "Content-Length %d for Content-Range of %d bytes", resp.ContentLength, cr.Len)
		}
		buf := make([]byte, cr.Len)
		if _, err := io.ReadFull(resp.Body, buf); err != nil {
			return nil, shortBody(err)
		}
		b.size = total
		return buf, nil
	case http.StatusOK:
		if resp.ContentLength <= 0 {
			return nil, fmt.Errorf("%w: 200 without a length for %s", errSuffixUnsupported, rng)
		}
		b.size = resp.ContentLength
		if b.size > n {
			return nil, nil // read the tail as a range, knowing the size
		}
		buf := make([]byte, b.size)
		if _, err := io.ReadFull(resp.Body, buf); err != nil {
			return nil, shortBody(err)
		}
		return buf, nil
	case http.StatusRequestedRangeNotSatisfiable:
		return nil, fmt.Errorf("%w: 416 for %s", errSuffixUnsupported, rng)
	}
	return nil, statusError(resp.StatusCode)
}

// stat finds the blob size: HEAD, falling back to a one-byte ranged GET
// when HEAD is refused or carries no length.
func (b *Blob) stat(ctx context.Context) (int64, error) {
	var size int64
	err := b.do(ctx, http.MethodHead, "", &consumer{read: func(resp *http.Response) error {
		switch {
		case resp.StatusCode == http.StatusOK && resp.ContentLength > 0:
			size = resp.ContentLength
			return nil
		case resp.StatusCode == http.StatusNotFound, resp.StatusCode == http.StatusUnauthorized,
			resp.StatusCode == http.StatusForbidden:
			return statusError(resp.StatusCode)
		}
		return fmt.Errorf("%w: status %d, Content-Length %d", errHeadNoSize, resp.StatusCode, resp.ContentLength)
	}})
	if errors.Is(err, errHeadNoSize) {
		err = b.do(ctx, http.MethodGet, "bytes=0-0", &consumer{read: func(resp *http.Response) error {
			var err error
			size, err = statByGet(resp)
			return err
		}})
	}
	if err != nil {
		return 0, err
	}
	return size, nil
}

func statByGet(resp *http.Response) (int64, error) {
	switch resp.StatusCode {
	case http.StatusPartialContent:
		_, total, err := parseContentRange(resp.Header.Get("Content-Range"))
		if err != nil || total < 0 {
			return 0, badResponse(206, "no blob size in Content-Range %q", resp.Header.Get("Content-Range"))
		}
		return total, nil
	case http.StatusOK:
		if resp.ContentLength > 0 {
			return resp.ContentLength, nil
		}
		return 0, badResponse(200, "no blob size")
	}
	return 0, statusError(resp.StatusCode)
}

func drainClose(resp *http.Response) {
	_, _ = io.CopyN(io.Discard, resp.Body, 64<<10)
	resp.Body.Close()
}
