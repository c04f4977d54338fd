package fetch

// Blob reads: what the layer reads of its blob outside a stream, through
// the ranges entry checks kept and the reads in flight.

import (
	"context"
	"fmt"
)

// read is readShared for a read others may wait for.
func (l *Layer) read(ctx context.Context, off, n int64) ([]byte, error) {
	return l.readShared(ctx, off, n, true)
}

// readShared reads [off, off+n) of the blob: from the ranges entry checks
// kept, from a read in flight that covers it, or with a request, which
// reads it covers wait for when shared (not a background span's: a reader
// whose chunk a background span holds fetches it itself, steal).
func (l *Layer) readShared(ctx context.Context, off, n int64, shared bool) ([]byte, error) {
	b, _, err := l.readFrom(ctx, off, n, shared)
	return b, err
}

// readFrom is readShared, and reports whether it fetched any of the bytes
// with a request of its own (not only from what checks kept or from a
// read in flight, whose chunks that read stores).
func (l *Layer) readFrom(ctx context.Context, off, n int64, shared bool) (b []byte, fetched bool, err error) {
	if b := l.recent.get(off, n); b != nil {
		return b, false, nil
	}
	head := l.recent.head(off, n)
	if int64(len(head)) == n {
		return head, false, nil // entry checks read it in parts
	}
	if len(head) > 0 {
		// an entry check read the start: the rest
		rest, fetched, err := l.readFrom(ctx, off+int64(len(head)), n-int64(len(head)), shared)
		if err != nil {
			return nil, false, err
		}
		return append(head, rest...), fetched, nil
	}
	if f := l.flights.covering(off, n); f != nil {
		b, ok, err := f.wait(ctx, off, n)
		if err != nil {
			return nil, false, err
		}
		if ok {
			return b, false, nil
		}
	}
	b, err = l.fetchRange(ctx, off, n, shared)
	return b, err == nil, err
}

// fetchRange reads [off, off+n) from the blob with a request, known as in
// flight meanwhile when shared: what readShared does when nothing holds
// the range, and what a chunk that failed verification is fetched again
// with (from inside the stream it came in, whose flight covers it and
// holds the same bytes: they are no second try).
func (l *Layer) fetchRange(ctx context.Context, off, n int64, shared bool) ([]byte, error) {
	l.requests.Add(1)
	var f *rawFlight
	if shared {
		f = l.flights.start(off, n)
	}
	b, err := l.blob.ReadRange(ctx, off, n)
	if f != nil {
		l.flights.finish(f, b, err)
	}
	if err != nil && preemptedCtx(ctx) {
		return nil, errPreempted
	}
	if err != nil {
		return nil, l.fail(&BlobError{fmt.Errorf("fetch: layer %s: reading blob range %d+%d: %w", l.opts.Name, off, n, err)})
	}
	if int64(len(b)) != n {
		return nil, l.fail(fmt.Errorf("fetch: layer %s: blob range %d+%d: got %d bytes", l.opts.Name, off, n, len(b)))
	}
	l.fetched.Add(n)
	return b, nil
}
