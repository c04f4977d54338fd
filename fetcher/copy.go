package fetcher

import (
	"context"
	"errors"
	"io"
	"sync"
)

// sinkError is a failure of the writer a Copy writes to: never retried,
// returned as it is.
type sinkError struct{ err error }

func (e *sinkError) Error() string { return e.err.Error() }
func (e *sinkError) Unwrap() error { return e.err }

// Copy writes the n bytes at off to w while they arrive, in order, with
// one GET (retried, then on the next host, from the first byte not yet
// written, as StreamRange). Nothing is cached and nothing is held but the
// piece being written, whatever n is: it serves pulling a whole layer.
// An error of w ends the copy with that error; the caller's context ends
// it with the context's error.
func (b *Blob) Copy(ctx context.Context, off, n int64, w io.Writer) error {
	r := Range{Off: off, Len: n}
	if err := b.check(r); err != nil {
		return err
	}
	ctx = b.scoped(ctx)
	var got int64
	deliver := func(p []byte) error {
		m, err := w.Write(p)
		got += int64(m)
		if err == nil && m < len(p) {
			err = io.ErrShortWrite
		}
		if err != nil {
			return &sinkError{err}
		}
		return nil
	}
	var firstErr error
	for hi := range b.hosts {
		received := func() int64 { return got }
		err := b.retrying(ctx, hi, "get", r.String(), received, func(actx context.Context) error {
			return b.streamOnce(actx, hi, Range{Off: off + got, Len: n - got}, deliver)
		})
		if err == nil {
			return nil
		}
		var se *sinkError
		if errors.As(err, &se) {
			return se.err
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

// ParallelCopy writes the whole blob to w in order, fetching it in parts
// of part bytes over up to conns concurrent range requests (each a Copy
// into memory), and writing each part once those before it are written:
// memory holds at most conns parts. With conns <= 1, or a blob of at most
// two parts, it is one Copy of the whole blob (one stream). It serves
// pulling a whole layer at the link's rate where one connection does not
// fill it (a high bandwidth-delay product, per-connection throttling).
func (b *Blob) ParallelCopy(ctx context.Context, w io.Writer, conns int, part int64) error {
	if part <= 0 {
		part = 8 << 20
	}
	if conns <= 1 || b.size <= 2*part {
		return b.Copy(ctx, 0, b.size, w)
	}
	var wg sync.WaitGroup
	ctx, cancel := context.WithCancel(ctx)
	// cancel runs first: the producer and the parts in flight end, then
	// they are waited for
	defer wg.Wait()
	defer cancel()
	nparts := int((b.size + part - 1) / part)
	type result struct {
		buf  []byte
		err  error
		done chan struct{}
	}
	results := make([]*result, nparts)
	for i := range results {
		results[i] = &result{done: make(chan struct{})}
	}
	slots := make(chan struct{}, conns) // parts fetched or held, not yet written
	wg.Add(1)
	go func() { // the producer: starts each part when a slot is free
		defer wg.Done()
		for i := range nparts {
			select {
			case slots <- struct{}{}:
			case <-ctx.Done():
				for _, r := range results[i:] {
					r.err = ctx.Err()
					close(r.done)
				}
				return
			}
			off := int64(i) * part
			n := min(part, b.size-off)
			res := results[i]
			wg.Add(1)
			go func() {
				defer wg.Done()
				buf := &fixedBuffer{b: make([]byte, 0, n)}
				res.err = b.Copy(ctx, off, n, buf)
				res.buf = buf.b
				close(res.done)
			}()
		}
	}()
	for _, res := range results {
		select {
		case <-res.done:
		case <-ctx.Done():
			return ctx.Err()
		}
		if res.err != nil {
			return res.err
		}
		_, err := w.Write(res.buf)
		res.buf = nil
		<-slots
		if err != nil {
			return err
		}
	}
	return nil
}

// fixedBuffer appends to a slice whose capacity is what it expects.
type fixedBuffer struct{ b []byte }

func (f *fixedBuffer) Write(p []byte) (int, error) {
	f.b = append(f.b, p...)
	return len(p), nil
}
