package fs

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/lazysnap/lazysnap/estargz"
	"github.com/lazysnap/lazysnap/index"
)

// BlobReader reads compressed byte ranges of a layer blob. The fetcher
// satisfies it; so does anything that can serve ranges.
type BlobReader interface {
	ReadRange(ctx context.Context, off, n int64) ([]byte, error)
}

// RangeStreamer is implemented by BlobReaders that can hand over a range
// while it arrives: fn is called repeatedly with the bytes of the range
// received so far (a growing prefix, valid during the call). Prefetch and
// background spans then make their first chunks available before the last
// have come.
type RangeStreamer interface {
	StreamRange(ctx context.Context, off, n int64, fn func(p []byte)) error
}

// Invalidator is implemented by caching BlobReaders: the layer calls it when
// bytes it read fail verification, so that the next read fetches them anew.
type Invalidator interface {
	Invalidate(off, n int64)
}

// Options configures a Layer. Zero values mean the defaults.
type Options struct {
	// Name names the layer (its digest) in errors.
	Name string
	// ContentDir holds the decompressed, verified file contents; it is
	// created if missing.
	ContentDir string
	// NoPrefetch skips fetching the prioritized files at mount.
	NoPrefetch bool
	// NoBackground skips fetching the rest of the layer in the background.
	NoBackground bool
	// BackgroundConcurrency is how many background requests run at once (2).
	BackgroundConcurrency int
	// SpanSize caps the compressed bytes of one prefetch or background
	// request (8 MiB).
	SpanSize int64
	// ReadAhead is how many chunks a sequential reader is fetched ahead (4).
	ReadAhead int
	// FetchTimeout bounds one fetch, however many readers wait for it (2m).
	FetchTimeout time.Duration
	// OnError, if set, receives every fetch error.
	OnError func(error)
	// OnReadLatency, if set, is called once for every read that had to wait
	// for chunks to be fetched (on demand, or already in flight for
	// prefetch, background or another reader), with how long it waited,
	// whether the wait ended in success, an error or the reader giving up.
	// Reads of chunks already present do not call it. It must be cheap and
	// safe for concurrent use: it runs on the read path.
	OnReadLatency func(time.Duration)
	// OnChunkAccess, if set, is called once per chunk the first time a
	// reader needs it (present or not), in first-access order: what a
	// learned prefetch profile records. It must be cheap and safe for
	// concurrent use: it runs on the read path.
	OnChunkAccess func(ino index.Ino, chunk int)
}

// Stats are a layer's counters.
type Stats struct {
	Chunks, ChunksPresent int
	FetchedBytes          int64 // compressed bytes received
	Requests              int64 // BlobReader calls
	FuseReads             int64 // reads served by this process
	PassthroughOpens      int64 // opens handed to the kernel
	PrefetchDone          bool
	BackgroundDone        bool
	Errors                int64
}

// call is one in-flight chunk fetch that readers can wait for.
type call struct {
	done chan struct{}
	err  error
}

// Layer is one layer's filesystem state.
type Layer struct {
	idx   *index.Index
	blob  BlobReader
	opts  Options
	owner []index.Ino // chunk id → file

	present  []atomic.Uint64 // bitmap over chunk ids
	accessed []atomic.Uint64 // chunk ids readers needed, for OnChunkAccess (nil without it)
	nPresent atomic.Int64

	mu       sync.Mutex
	inflight map[int]*call
	files    map[index.Ino]*os.File

	ctx      context.Context // the layer's lifetime: background work and fetches
	cancel   context.CancelFunc
	wg       sync.WaitGroup
	onDemand atomic.Int32 // readers waiting for chunks
	sem      chan struct{}

	fetched, requests, fuseReads, passthrough, errs atomic.Int64
	prefetchDone, backgroundDone                    atomic.Bool
}

// NewLayer prepares a layer. Call Start to begin prefetch and background
// fetch, and Close when done.
func NewLayer(idx *index.Index, blob BlobReader, opts Options) (*Layer, error) {
	if opts.ContentDir == "" {
		return nil, errors.New("fs: no content directory")
	}
	if err := os.MkdirAll(opts.ContentDir, 0o700); err != nil {
		return nil, fmt.Errorf("fs: %w", err)
	}
	if opts.BackgroundConcurrency <= 0 {
		opts.BackgroundConcurrency = 2
	}
	if opts.SpanSize <= 0 {
		opts.SpanSize = 8 << 20
	}
	if opts.ReadAhead <= 0 {
		opts.ReadAhead = 4
	}
	if opts.FetchTimeout <= 0 {
		opts.FetchTimeout = 2 * time.Minute
	}
	n := idx.TotalChunks()
	l := &Layer{
		idx: idx, blob: blob, opts: opts,
		owner:    make([]index.Ino, n),
		present:  make([]atomic.Uint64, (n+63)/64),
		accessed: newAccessed(opts, n),
		inflight: map[int]*call{},
		files:    map[index.Ino]*os.File{},
		sem:      make(chan struct{}, 8),
	}
	for ino := index.Ino(0); int(ino) < idx.Len(); ino++ {
		for i := range idx.NumChunks(ino) {
			l.owner[idx.ChunkID(ino, i)] = ino
		}
	}
	l.ctx, l.cancel = context.WithCancel(context.Background())
	return l, nil
}

// Start begins prefetch of the prioritized files and then background fetch,
// as the options say. It returns at once.
func (l *Layer) Start() {
	l.wg.Add(1)
	go func() {
		defer l.wg.Done()
		if !l.opts.NoPrefetch {
			l.fetchAll(l.idx.PrefetchEnd, 4)
		}
		l.prefetchDone.Store(true)
		if !l.opts.NoBackground {
			l.fetchAll(l.idx.DataEnd, l.opts.BackgroundConcurrency)
			l.backgroundDone.Store(l.nPresent.Load() == int64(len(l.owner)))
		}
	}()
}

// Close stops background work, waits for it, and closes content files.
func (l *Layer) Close() error {
	l.cancel()
	l.wg.Wait()
	l.mu.Lock()
	defer l.mu.Unlock()
	for ino, f := range l.files {
		f.Close()
		delete(l.files, ino)
	}
	return nil
}

// Stats returns the layer's counters.
func (l *Layer) Stats() Stats {
	return Stats{
		Chunks: len(l.owner), ChunksPresent: int(l.nPresent.Load()),
		FetchedBytes: l.fetched.Load(), Requests: l.requests.Load(), FuseReads: l.fuseReads.Load(),
		PassthroughOpens: l.passthrough.Load(), PrefetchDone: l.prefetchDone.Load(),
		BackgroundDone: l.backgroundDone.Load(), Errors: l.errs.Load(),
	}
}

func (l *Layer) isPresent(id int) bool { return l.present[id/64].Load()&(1<<(id%64)) != 0 }

func (l *Layer) markPresent(id int) {
	w := &l.present[id/64]
	for {
		old := w.Load()
		if old&(1<<(id%64)) != 0 {
			return
		}
		if w.CompareAndSwap(old, old|1<<(id%64)) {
			l.nPresent.Add(1)
			return
		}
	}
}

// filePresent reports whether every chunk of ino is present.
func (l *Layer) filePresent(ino index.Ino) bool {
	for i := range l.idx.NumChunks(ino) {
		if !l.isPresent(l.idx.ChunkID(ino, i)) {
			return false
		}
	}
	return true
}

// claim registers a call for every id that is neither present nor being
// fetched, and returns those (to fetch) and the calls to wait for.
func (l *Layer) claim(ids []int) (mine []int, wait []*call) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, id := range ids {
		if l.isPresent(id) {
			continue
		}
		c, ok := l.inflight[id]
		if !ok {
			c = &call{done: make(chan struct{})}
			l.inflight[id] = c
			mine = append(mine, id)
		}
		wait = append(wait, c)
	}
	return mine, wait
}

func (l *Layer) complete(id int, err error) {
	l.mu.Lock()
	c := l.inflight[id]
	delete(l.inflight, id)
	l.mu.Unlock()
	if c != nil {
		c.err = err
		close(c.done)
	}
}

// ensure makes chunks [from, to] of ino present, fetching what is missing.
// The fetch runs detached from ctx; if ctx ends first, ensure returns its
// error and the fetch goes on for whoever else waits.
func (l *Layer) ensure(ctx context.Context, ino index.Ino, from, to int) error {
	l.noteAccess(ino, from, to)
	ids := make([]int, 0, to-from+1)
	for i := from; i <= to; i++ {
		ids = append(ids, l.idx.ChunkID(ino, i))
	}
	mine, wait := l.claim(ids)
	if len(wait) == 0 {
		return nil
	}
	l.onDemand.Add(1)
	defer l.onDemand.Add(-1)
	if l.opts.OnReadLatency != nil {
		start := time.Now()
		defer func() { l.opts.OnReadLatency(time.Since(start)) }()
	}
	if len(mine) > 0 {
		go l.fetchSpan(mine)
	}
	for _, c := range wait {
		select {
		case <-c.done:
			if c.err != nil {
				return c.err
			}
		case <-ctx.Done():
			return &interrupted{ctx.Err()}
		}
	}
	return nil
}

// readAhead starts fetching up to ReadAhead chunks of ino from chunk i, one
// request each so that they travel in parallel.
func (l *Layer) readAhead(ino index.Ino, i int) {
	end := min(i+l.opts.ReadAhead, l.idx.NumChunks(ino))
	for ; i < end; i++ {
		select {
		case l.sem <- struct{}{}:
		default:
			return // enough read-ahead in flight already
		}
		mine, _ := l.claim([]int{l.idx.ChunkID(ino, i)})
		if len(mine) == 0 {
			<-l.sem
			continue
		}
		go func() {
			defer func() { <-l.sem }()
			l.fetchSpan(mine)
		}()
	}
}

// fetchSpan fetches claimed chunks (ascending blob offsets) with one range
// request, verifies each, stores it, and completes their calls.
func (l *Layer) fetchSpan(ids []int) {
	ctx, cancel := context.WithTimeout(l.ctx, l.opts.FetchTimeout)
	defer cancel()
	chunks := make([]estargz.Chunk, len(ids))
	lo, hi := int64(-1), int64(0)
	for k, id := range ids {
		ino := l.owner[id]
		chunks[k] = l.idx.Chunk(ino, id-l.idx.ChunkID(ino, 0))
		if lo < 0 || chunks[k].Offset < lo {
			lo = chunks[k].Offset
		}
		hi = max(hi, chunks[k].End)
	}
	if rs, ok := l.blob.(RangeStreamer); ok && len(ids) > 1 {
		l.streamSpan(ctx, rs, ids, chunks, lo, hi)
		return
	}
	raw, err := l.read(ctx, lo, hi-lo)
	for k, id := range ids {
		if err == nil {
			c := &chunks[k]
			err1 := l.store(ctx, id, c, raw[c.Offset-lo:c.End-lo])
			l.complete(id, err1)
			continue
		}
		l.complete(id, err)
	}
}

// streamSpan is fetchSpan over a RangeStreamer: each chunk is verified,
// stored and completed as soon as its last byte has arrived.
func (l *Layer) streamSpan(ctx context.Context, rs RangeStreamer, ids []int, chunks []estargz.Chunk, lo, hi int64) {
	order := make([]int, len(ids)) // by chunk end
	for k := range order {
		order[k] = k
	}
	sort.Slice(order, func(i, j int) bool { return chunks[order[i]].End < chunks[order[j]].End })
	next := 0
	var got int64
	l.requests.Add(1)
	err := rs.StreamRange(ctx, lo, hi-lo, func(buf []byte) {
		got = int64(len(buf))
		for ; next < len(order) && chunks[order[next]].End-lo <= got; next++ {
			k := order[next]
			c := &chunks[k]
			l.complete(ids[k], l.store(ctx, ids[k], c, buf[c.Offset-lo:c.End-lo]))
		}
	})
	l.fetched.Add(got)
	if err == nil && next < len(order) {
		err = fmt.Errorf("stream ended after %d of %d bytes", got, hi-lo)
	}
	if next < len(order) {
		err = l.fail(&fetchError{fmt.Errorf("fs: layer %s: reading blob range %d+%d: %w", l.opts.Name, lo, hi-lo, err)})
	}
	for ; next < len(order); next++ {
		l.complete(ids[order[next]], err)
	}
}

func (l *Layer) read(ctx context.Context, off, n int64) ([]byte, error) {
	l.requests.Add(1)
	b, err := l.blob.ReadRange(ctx, off, n)
	if err != nil {
		return nil, l.fail(&fetchError{fmt.Errorf("fs: layer %s: reading blob range %d+%d: %w", l.opts.Name, off, n, err)})
	}
	if int64(len(b)) != n {
		return nil, l.fail(fmt.Errorf("fs: layer %s: blob range %d+%d: got %d bytes", l.opts.Name, off, n, len(b)))
	}
	l.fetched.Add(n)
	return b, nil
}

func (l *Layer) fail(err error) error {
	l.errs.Add(1)
	if l.opts.OnError != nil {
		l.opts.OnError(err)
	}
	return err
}

// store verifies one chunk from its compressed bytes (refetching it once if
// they are wrong) and writes it into the file's content.
func (l *Layer) store(ctx context.Context, id int, c *estargz.Chunk, raw []byte) error {
	data, err := c.Decode(nil, raw)
	if err != nil {
		if inv, ok := l.blob.(Invalidator); ok {
			inv.Invalidate(c.Offset, c.CompressedSize())
		}
		raw, err = l.read(ctx, c.Offset, c.CompressedSize())
		if err != nil {
			return err
		}
		if data, err = c.Decode(nil, raw); err != nil {
			return l.fail(fmt.Errorf("fs: layer %s: chunk at %d+%d: %w", l.opts.Name, c.Offset, c.CompressedSize(), err))
		}
	}
	f, err := l.file(l.owner[id])
	if err != nil {
		return l.fail(err)
	}
	if _, err := f.WriteAt(data, c.FileOffset); err != nil {
		return l.fail(fmt.Errorf("fs: layer %s: storing chunk: %w", l.opts.Name, err))
	}
	l.markPresent(id)
	return nil
}

func (l *Layer) contentPath(ino index.Ino) string {
	return filepath.Join(l.opts.ContentDir, strconv.FormatUint(uint64(ino), 10))
}

// file returns ino's content file, creating it at its full (sparse) size.
func (l *Layer) file(ino index.Ino) (*os.File, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if f, ok := l.files[ino]; ok {
		return f, nil
	}
	f, err := os.OpenFile(l.contentPath(ino), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("fs: content file: %w", err)
	}
	if err := f.Truncate(l.idx.Attr(ino).Size); err != nil {
		f.Close()
		return nil, fmt.Errorf("fs: content file: %w", err)
	}
	l.files[ino] = f
	return f, nil
}

// fetchAll fetches every missing chunk that starts before end, in blob
// order, in spans of up to SpanSize, with conc requests at once, yielding to
// on-demand reads.
func (l *Layer) fetchAll(end int64, conc int) {
	ids := make([]int, 0, len(l.owner))
	for id := range l.owner {
		if !l.isPresent(id) {
			ids = append(ids, id)
		}
	}
	offset := func(id int) int64 {
		ino := l.owner[id]
		return l.idx.Chunk(ino, id-l.idx.ChunkID(ino, 0)).Offset
	}
	sort.Slice(ids, func(i, j int) bool { return offset(ids[i]) < offset(ids[j]) })
	sem := make(chan struct{}, conc)
	var wg sync.WaitGroup
	defer wg.Wait()
	for len(ids) > 0 && l.ctx.Err() == nil {
		start := offset(ids[0])
		if start >= end {
			return
		}
		n := 1
		for n < len(ids) && offset(ids[n]) < end && offset(ids[n])-start < l.opts.SpanSize {
			n++
		}
		span := ids[:n]
		ids = ids[n:]
		for l.onDemand.Load() > 0 && l.ctx.Err() == nil {
			time.Sleep(2 * time.Millisecond) // on-demand reads go first
		}
		mine, _ := l.claim(span)
		if len(mine) == 0 {
			continue
		}
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			l.fetchSpan(mine)
		}()
	}
}
