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
// of part bytes over up to conns concurrent range requests (each a Copy):
// the first part not yet written goes to w while it arrives, the parts
// after it are held in memory until their turn, so memory holds at most
// conns parts and w receives bytes from the first response on. With
// conns <= 1, or a blob of at most two parts, it is one Copy of the whole
// blob (one stream). It serves pulling a whole layer at the link's rate
// where one connection does not fill it (a high bandwidth-delay product,
// per-connection throttling).
func (b *Blob) ParallelCopy(ctx context.Context, w io.Writer, conns int, part int64) error {
	if part <= 0 {
		part = 4 << 20
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
	parts := make([]*partBuf, nparts)
	for i := range parts {
		parts[i] = &partBuf{more: make(chan struct{}, 1)}
	}
	slots := make(chan struct{}, conns) // parts fetched or held, not yet written
	wg.Add(1)
	go func() { // the producer: starts each part when a slot is free
		defer wg.Done()
		for i := range nparts {
			select {
			case slots <- struct{}{}:
			case <-ctx.Done():
				for _, p := range parts[i:] {
					p.finish(ctx.Err())
				}
				return
			}
			off := int64(i) * part
			n := min(part, b.size-off)
			p := parts[i]
			p.mu.Lock()
			p.buf = make([]byte, 0, n)
			p.mu.Unlock()
			wg.Add(1)
			go func() {
				defer wg.Done()
				p.finish(b.Copy(ctx, off, n, p))
			}()
		}
	}()
	for _, p := range parts {
		if err := p.writeTo(ctx, w); err != nil {
			return err
		}
		<-slots
	}
	return nil
}

// partBuf is one part of a ParallelCopy: its bytes so far, written by its
// Copy and read by the consumer while they come.
type partBuf struct {
	mu   sync.Mutex
	buf  []byte // capacity: the part's size, so that it is never moved
	done bool
	err  error
	more chan struct{} // a token when bytes came or the part ended
}

func (p *partBuf) signal() {
	select {
	case p.more <- struct{}{}:
	default:
	}
}

func (p *partBuf) Write(b []byte) (int, error) {
	p.mu.Lock()
	p.buf = append(p.buf, b...)
	p.mu.Unlock()
	p.signal()
	return len(b), nil
}

func (p *partBuf) finish(err error) {
	p.mu.Lock()
	p.done, p.err = true, err
	p.mu.Unlock()
	p.signal()
}

// writeTo writes the part to w while it arrives, until it is complete;
// the part's error, or w's, ends it.
func (p *partBuf) writeTo(ctx context.Context, w io.Writer) error {
	off := 0
	for {
		p.mu.Lock()
		avail, done, err := p.buf[off:len(p.buf)], p.done, p.err
		p.mu.Unlock()
		if len(avail) > 0 {
			if _, werr := w.Write(avail); werr != nil {
				return werr
			}
			off += len(avail)
			continue
		}
		if done {
			p.mu.Lock()
			p.buf = nil // written: the memory goes
			p.mu.Unlock()
			return err
		}
		select {
		case <-p.more:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}
