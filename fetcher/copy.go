package fetcher

import (
	"context"
	"errors"
	"io"
	"net/http"
	"sync"
	"time"
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
	received := func() int64 { return got }
	err := b.do(ctx, http.MethodGet, r.String(), &consumer{received: received, read: func(resp *http.Response) error {
		return b.readStream(resp, Range{Off: off + got, Len: n - got}, deliver)
	}})
	var se *sinkError
	if errors.As(err, &se) {
		return se.err
	}
	return err
}

// ParallelCopy writes the whole blob to w in order, over several
// connections when they pay and over one when it fills the link. It first
// fetches one part of part bytes alone, then the next two at once, and
// goes on with up to conns range requests of part bytes (copyParts) only
// if the two moved their bytes at least parallelGain times as fast as the
// one; otherwise the rest of the blob is one stream. Several connections
// pay where each is held back on its own (a high bandwidth-delay product,
// per-connection throttling); where they share one bottleneck, one stream
// feeds w evenly and saves the round trips of the parts. With conns <= 1,
// or a blob too small to measure, it is one Copy of the whole blob.
func (b *Blob) ParallelCopy(ctx context.Context, w io.Writer, conns int, part int64) error {
	if part <= 0 {
		part = 4 << 20
	}
	if conns <= 1 || b.size <= probeParts*part {
		return b.Copy(ctx, 0, b.size, w)
	}
	// The probe's downloads follow each other with no gap, whatever w
	// takes: part 0 alone, then parts 1 and 2 at once, then (when they did
	// not pay) the rest as one stream into a pipe that w drains after
	// them. Parallel parts for the rest start once the probe is written.
	var wg sync.WaitGroup
	ctx, cancel := context.WithCancel(ctx)
	defer wg.Wait()
	defer cancel()
	probe := []*partBuf{newPartBuf(part), newPartBuf(part), newPartBuf(part)}
	type decision struct {
		stream *io.PipeReader // the rest, one stream; nil: in parts
	}
	decided := make(chan decision, 1)
	wg.Add(1)
	go func() { // the probe's downloads, one after another
		defer wg.Done()
		fetch := func(i int) {
			wg.Add(1)
			go func() {
				defer wg.Done()
				probe[i].finish(b.Copy(ctx, int64(i)*part, part, probe[i]))
			}()
		}
		began := time.Now()
		fetch(0)
		if !probe[0].waitFetched(ctx) {
			return
		}
		one := probe[0].since(began)
		began = time.Now()
		fetch(1)
		fetch(2)
		if !probe[1].waitFetched(ctx) || !probe[2].waitFetched(ctx) {
			return
		}
		if parallelPays(one, max(probe[1].since(began), probe[2].since(began))) {
			decided <- decision{}
			return
		}
		pr, pw := io.Pipe()
		wg.Add(1)
		go func() {
			defer wg.Done()
			pw.CloseWithError(b.Copy(ctx, 3*part, b.size-3*part, pw))
		}()
		context.AfterFunc(ctx, func() { pr.CloseWithError(ctx.Err()) })
		decided <- decision{stream: pr}
	}()
	for _, p := range probe {
		if err := p.writeTo(ctx, w); err != nil {
			return err
		}
	}
	var d decision
	select {
	case d = <-decided:
	case <-ctx.Done():
		return ctx.Err()
	}
	if d.stream != nil {
		_, err := io.Copy(w, d.stream)
		d.stream.Close()
		return err
	}
	_, err := b.copyParts(ctx, w, 3*part, b.size, conns, part)
	return err
}

const (
	// probeParts: a blob of at most this many parts is one stream (too
	// small for the probe to pay).
	probeParts = 6
	// parallelGain is how much faster two connections must be than one
	// for ParallelCopy to use several.
	parallelGain = 1.3
)

// parallelPays reports whether two parts fetched at once in two took
// parallelGain times less per part than one part alone in one.
func parallelPays(one, two time.Duration) bool {
	return float64(one)*2 >= parallelGain*float64(two)
}

// copyParts writes the bytes [start, end) of the blob to w in order,
// fetched in parts of part bytes over up to conns concurrent range
// requests (each a Copy): the first part not yet written goes to w while
// it arrives, the parts after it are held in memory until their turn, so
// memory holds at most conns parts. It returns how long the download took,
// from the first request to the last part's last byte.
func (b *Blob) copyParts(ctx context.Context, w io.Writer, start, end int64, conns int, part int64) (time.Duration, error) {
	var wg sync.WaitGroup
	ctx, cancel := context.WithCancel(ctx)
	// cancel runs first: the producer and the parts in flight end, then
	// they are waited for
	defer wg.Wait()
	defer cancel()
	nparts := int((end - start + part - 1) / part)
	parts := make([]*partBuf, nparts)
	for i := range parts {
		parts[i] = newPartBuf(0)
	}
	slots := make(chan struct{}, conns) // parts fetched or held, not yet written
	began := time.Now()
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
			off := start + int64(i)*part
			n := min(part, end-off)
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
	var last time.Time
	for _, p := range parts {
		if err := p.writeTo(ctx, w); err != nil {
			return 0, err
		}
		<-slots
		p.mu.Lock()
		if p.doneAt.After(last) {
			last = p.doneAt
		}
		p.mu.Unlock()
	}
	return max(last.Sub(began), time.Millisecond), nil
}

// partBuf is one part of a ParallelCopy: its bytes so far, written by its
// Copy and read by the consumer while they come.
type partBuf struct {
	mu     sync.Mutex
	buf    []byte // capacity: the part's size, so that it is never moved
	done   bool
	doneAt time.Time
	err    error
	more   chan struct{} // a token when bytes came or the part ended
	fin    chan struct{} // closed when the part ended
}

// newPartBuf returns a part of n bytes (0: sized when its fetch starts).
func newPartBuf(n int64) *partBuf {
	return &partBuf{buf: make([]byte, 0, n), more: make(chan struct{}, 1), fin: make(chan struct{})}
}

// waitFetched waits until the part is fetched; false when it failed or
// ctx ended.
func (p *partBuf) waitFetched(ctx context.Context) bool {
	select {
	case <-p.fin:
	case <-ctx.Done():
		return false
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.err == nil
}

// since is how long the part took to fetch from began.
func (p *partBuf) since(began time.Time) time.Duration {
	p.mu.Lock()
	defer p.mu.Unlock()
	return max(p.doneAt.Sub(began), time.Millisecond)
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
	p.done, p.err, p.doneAt = true, err, time.Now()
	p.mu.Unlock()
	p.signal()
	close(p.fin)
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
