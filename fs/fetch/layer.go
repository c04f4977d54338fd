package fetch

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sort"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/lazysnap/lazysnap/index"
	"github.com/lazysnap/lazysnap/layer"
)

// BlobReader reads compressed byte ranges of a layer blob. The fetcher
// satisfies it; so does anything that can serve ranges.
type BlobReader = layer.BlobReader

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
type Invalidator = layer.Invalidator

// Decoder turns the compressed bytes of one chunk into its verified
// content: a layer format's layer.Decoder.
type Decoder = layer.Decoder

// Options configures a Layer. Zero values mean the defaults.
//
// The fetch-policy defaults are sized for the link the cold-start benchmark
// models, 100 Mbit/s (12.5 MB/s) at 20 ms RTT, whose bandwidth-delay
// product (BDP) is 12.5 MB/s x 20 ms = 250 KB: a request costs one round
// trip, and up to a BDP of bytes more in the same request costs less than
// another round trip.
type Options struct {
	// Name names the layer (its digest) in errors.
	Name string
	// Decoder decodes and verifies the layer's chunks: the layer format's
	// (required).
	Decoder Decoder
	// ContentDir holds the decompressed, verified file contents; it is
	// created if missing.
	ContentDir string
	// NoPrefetch skips fetching the prioritized files at mount.
	NoPrefetch bool
	// NoBackground skips fetching the rest of the layer in the background.
	NoBackground bool
	// BackgroundConcurrency is how many background requests run at once (2).
	BackgroundConcurrency int
	// SpanSize caps the compressed bytes of one prefetch request (8 MiB).
	SpanSize int64
	// BackgroundSpanSize caps the compressed bytes of one background
	// request (1 MiB): a reader whose chunk a background span has claimed
	// never waits behind more than one span's bytes. A 1 MiB span takes
	// 80 ms at 100 Mbit/s, four round trips, so spans back to back (with
	// BackgroundConcurrency >= 2) keep the link busy.
	BackgroundSpanSize int64
	// BackgroundInflight bounds the background bytes requested and not yet
	// received (2.5 MB = 100 Mbit/s x 200 ms): a BDP for links up to 200 ms
	// RTT, so that background fetch runs at line rate on a far registry,
	// while an on-demand request shares the link with at most 200 ms of
	// background bytes at 100 Mbit/s. A span is always allowed when no
	// background bytes are in flight.
	BackgroundInflight int64
	// BackgroundQuiet: background requests are issued only once no reader
	// (or request waiting for an entry check) has waited for a fetch for
	// this long (300 ms; negative: no wait),
	// measured from the end of the last on-demand wait, or from Start. A
	// starting container reads in bursts a few round trips apart; the
	// background fills the gaps after them, not the bursts.
	BackgroundQuiet time.Duration
	// StreamWait: a reader of a chunk claimed by a background span whose
	// stream is more than StreamWait compressed bytes before the chunk
	// fetches the chunk itself (256 KiB, about a BDP: waiting for the
	// stream then costs more than a round trip; negative: always wait).
	// Nearer, it is served from the stream as soon as the chunk's bytes
	// have arrived.
	StreamWait int64
	// ReadAround: a cold read of a small file fetches, in the same request,
	// the chunks of the small files beside it in the blob that lie in its
	// directory (tar order, in which a package's modules lie together),
	// up to ReadAround compressed bytes more (256 KiB, about a BDP: less
	// than the round trip a later miss of one of them would cost;
	// negative: off), doubled for a directory's second cold miss and
	// quadrupled from its third (a package being imported). It stops at a
	// large file, a file of another directory, and a chunk already present
	// or in flight.
	ReadAround int64
	// ReadAroundFileMax is the largest compressed size of a small file, for
	// ReadAround (64 KiB: most modules of a language's standard library,
	// compressed).
	ReadAroundFileMax int64
	// NoPredict turns off fetching what the image says is read next: when
	// a reader's chunk of an ELF file arrives, the rest of what the dynamic
	// loader reads of it (its dynamic section), its interpreter, the
	// layer's ld.so.cache and the libraries it needs (DT_NEEDED, found as
	// the loader finds them) are fetched at once, in parallel, instead of
	// one cold miss after another.
	NoPredict bool
	// ReadAhead is how many chunks a sequential reader is fetched ahead (4).
	ReadAhead int
	// FetchTimeout bounds one fetch, however many readers wait for it (2m).
	FetchTimeout time.Duration
	// NoPreempt keeps background requests in flight when a reader has to
	// wait. By default a reader that waits stops the background spans no
	// reader waits on (nor holding a chunk of its file, which a sequential
	// reader reads next): their chunks not yet received are released and
	// fetched again once the mount is quiet (preempt.go).
	NoPreempt bool
	// Link is shared by the layers whose background fetch yields to one
	// another's readers (one per process: they share its network); nil:
	// the layer's own.
	Link *Link
	// Clock measures BackgroundQuiet (the real clock).
	Clock Clock
	// OnError, if set, receives every fetch error.
	OnError func(error)
	// OnReadLatency, if set, is called once for every read that had to wait
	// for chunks to be fetched (on demand, or already in flight for
	// prefetch, background or another reader), with how long it waited,
	// whether the wait ended in success, an error or the reader giving up.
	// Reads of chunks already present do not call it. It must be cheap and
	// safe for concurrent use: it runs on the read path.
	OnReadLatency func(time.Duration)
	// OnOp, if set, is called once for every FUSE request a mount of the
	// layer handles, just before its answer: the operation's name (OpName), how
	// long it took to handle, and the errno answered (0: success; FORGET
	// is not answered). It must be cheap and safe for concurrent use: it
	// runs on the request path.
	OnOp func(op string, took time.Duration, errno syscall.Errno)
	// OnChunkAccess, if set, is called once per chunk the first time a
	// reader needs it (present or not), in first-access order: what a
	// learned prefetch profile records. It must be cheap and safe for
	// concurrent use: it runs on the read path.
	OnChunkAccess func(ino index.Ino, chunk int)
}

// Clock is the time source of the background's quiet period.
type Clock interface {
	Now() time.Time
	After(d time.Duration) <-chan time.Time
}

type realClock struct{}

func (realClock) Now() time.Time                         { return time.Now() }
func (realClock) After(d time.Duration) <-chan time.Time { return time.After(d) }

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
	ReadAroundChunks      int64 // chunks stored from read-around
	ReadAroundBytes       int64 // their compressed bytes
	Misses                int64 // reads that found a chunk neither present nor in flight, and fetched it
	PredictedChunks       int64 // chunks fetched because the image said they are read next (NoPredict)
	PredictedBytes        int64 // their compressed bytes
	Steals                int64 // chunks a reader fetched itself, ahead of the background span that held them
	Preempted             int64 // background chunks released, not yet received, when a reader waited (NoPreempt)
	Waiting               int   // readers waiting for chunks now, and requests waiting for entry checks
	InFlight              int   // chunks being fetched now
	Predicting            int   // predicted fetches in flight, or queued (one for the queue)
}

// call is one in-flight chunk fetch that readers can wait for.
// Its owners are the fetches that may complete it: the span that claimed
// it, and a reader that fetches it ahead of a background span (a steal). It
// succeeds with the first owner that stores it, and fails only when every
// owner has failed. Guarded by Layer.mu.
type call struct {
	done    chan struct{}
	err     error
	span    *span // the fetch that claimed it
	owners  int
	waiters int // readers waiting for it (claimAs): preempt spares its span
	closed  bool
	stolen  bool
}

// Layer is one layer's filesystem state.
type Layer struct {
	idx   *index.Index
	blob  BlobReader
	opts  Options
	owner []index.Ino // chunk id → file

	present  []atomic.Uint64 // bitmap over chunk ids
	accessed []atomic.Uint64 // chunk ids readers needed, for OnChunkAccess (nil without it)
	checked  []atomic.Uint64 // inodes an EntryVerifier Decoder verified (nil for other Decoders)
	refused  []atomic.Uint64 // inodes it found the layer contradicts
	recent   recentRaw       // what entry checks read last
	flights  rawFlights      // the blob reads in flight
	nPresent atomic.Int64
	whole    chan struct{} // closed once every chunk is present

	mu       sync.Mutex
	inflight map[int]*call
	files    map[index.Ino]*os.File
	dirMiss  map[index.Ino]uint       // cold misses of small files per directory (read-around)
	checking map[index.Ino]*entryCall // entry checks in flight (entrycheck.go)
	closed   bool                     // Close has begun: no new fetch, no new content file

	ctx      context.Context // the layer's lifetime: background work and fetches
	cancel   context.CancelFunc
	wg       sync.WaitGroup
	onDemand atomic.Int32 // readers waiting for chunks, and requests waiting for entry checks
	profiled atomic.Int32 // PrefetchChunks in progress: the background waits for them too
	sem      chan struct{}

	// what the background waits on: readers (of every layer on the link),
	// the quiet period, its bytes in flight; the link's signal is closed
	// and replaced whenever a wait ends or bgInflight falls
	link         *Link
	lastOnDemand atomic.Int64 // Clock nanoseconds when the layer's last on-demand wait ended (or Start)
	sigMu        sync.Mutex
	bgInflight   int64              // guarded by sigMu
	bgSpans      map[*span]struct{} // background spans in flight, to preempt; guarded by mu

	fetched, requests, fuseReads, passthrough, errs atomic.Int64
	aroundChunks, aroundBytes, steals, preempted    atomic.Int64
	predicted, predictedBytes, misses               atomic.Int64
	pred                                            predictor
	parents                                         parents
	prefetchDone, backgroundDone                    atomic.Bool
	bad                                             atomic.Pointer[PanicError] // the panic that made the layer bad
}

// NewLayer prepares a layer. Call Start to begin prefetch and background
// fetch, and Close when done.
func NewLayer(idx *index.Index, blob BlobReader, opts Options) (*Layer, error) {
	if opts.ContentDir == "" {
		return nil, errors.New("fetch: no content directory")
	}
	if err := os.MkdirAll(opts.ContentDir, 0o700); err != nil {
		return nil, fmt.Errorf("fetch: %w", err)
	}
	if opts.BackgroundConcurrency <= 0 {
		opts.BackgroundConcurrency = 2
	}
	if opts.SpanSize <= 0 {
		opts.SpanSize = 8 << 20
	}
	if opts.BackgroundSpanSize <= 0 {
		opts.BackgroundSpanSize = 1 << 20
	}
	if opts.BackgroundInflight <= 0 {
		opts.BackgroundInflight = 2_500_000
	}
	if opts.BackgroundQuiet == 0 {
		opts.BackgroundQuiet = 300 * time.Millisecond
	}
	if opts.StreamWait == 0 {
		opts.StreamWait = 256 << 10
	}
	if opts.ReadAround == 0 {
		opts.ReadAround = 256 << 10
	}
	if opts.ReadAroundFileMax <= 0 {
		opts.ReadAroundFileMax = 64 << 10
	}
	if opts.Decoder == nil {
		return nil, errors.New("fetch: no decoder")
	}
	if opts.Clock == nil {
		opts.Clock = realClock{}
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
		checked:  newInodeBits(opts.Decoder, idx.Len()),
		refused:  newInodeBits(opts.Decoder, idx.Len()),
		inflight: map[int]*call{},
		bgSpans:  map[*span]struct{}{},
		files:    map[index.Ino]*os.File{},
		sem:      make(chan struct{}, 8),
		link:     opts.Link,
		whole:    make(chan struct{}),
		pred:     predictor{done: map[index.Ino]bool{}},
	}
	if n == 0 {
		close(l.whole)
	}
	for ino := index.Ino(0); int(ino) < idx.Len(); ino++ {
		for i := range idx.NumChunks(ino) {
			l.owner[idx.ChunkID(ino, i)] = ino
		}
	}
	if l.link == nil {
		l.link = NewLink()
	}
	l.link.add(l)
	l.ctx, l.cancel = context.WithCancel(context.Background())
	return l, nil
}

// Start begins prefetch of the prioritized files and then background fetch,
// as the options say. It returns at once.
func (l *Layer) Start() {
	l.lastOnDemand.Store(l.opts.Clock.Now().UnixNano())
	l.wg.Add(1)
	go func() {
		defer l.wg.Done()
		defer l.contain(nil)
		if !l.opts.NoPrefetch {
			l.fetchAll(l.idx.PrefetchEnd, false)
		}
		l.prefetchDone.Store(true)
		// a pass again while readers preempted some of the last pass's
		for !l.opts.NoBackground && l.ctx.Err() == nil {
			before := l.preempted.Load()
			l.fetchAll(l.idx.DataEnd, true)
			if l.preempted.Load() == before {
				break
			}
		}
		if !l.opts.NoBackground {
			l.backgroundDone.Store(l.nPresent.Load() == int64(len(l.owner)))
		}
	}()
}

// spawn runs fn in a goroutine Close waits for, unless the layer is
// closed (then fn does not run: nobody waits for its chunks but readers,
// whom the closed layer fails).
func (l *Layer) spawn(fn func()) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return false
	}
	l.wg.Add(1)
	go func() {
		defer l.wg.Done()
		fn()
	}()
	return true
}

// Close stops background work and every fetch, waits for them, and closes
// content files; nothing is written under ContentDir after it returns.
func (l *Layer) Close() error {
	l.mu.Lock()
	l.closed = true
	l.mu.Unlock()
	l.link.remove(l)
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

// Complete is closed once every chunk of the layer is present (verified
// and stored), whoever fetched it: the background fetch, readers or
// prefetch. A layer that is closed first never completes.
func (l *Layer) Complete() <-chan struct{} { return l.whole }

// Stats returns the layer's counters.
func (l *Layer) Stats() Stats {
	l.mu.Lock()
	inflight := len(l.inflight)
	l.mu.Unlock()
	return Stats{
		InFlight: inflight,
		Chunks:   len(l.owner), ChunksPresent: int(l.nPresent.Load()),
		FetchedBytes: l.fetched.Load(), Requests: l.requests.Load(), FuseReads: l.fuseReads.Load(),
		PassthroughOpens: l.passthrough.Load(), PrefetchDone: l.prefetchDone.Load(),
		BackgroundDone: l.backgroundDone.Load(), Errors: l.errs.Load(),
		ReadAroundChunks: l.aroundChunks.Load(), ReadAroundBytes: l.aroundBytes.Load(), Steals: l.steals.Load(),
		Preempted: l.preempted.Load(),
		Misses:    l.misses.Load(), PredictedChunks: l.predicted.Load(), PredictedBytes: l.predictedBytes.Load(),
		Waiting: int(l.onDemand.Load()), Predicting: l.predicting(),
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
			if l.nPresent.Add(1) == int64(len(l.owner)) {
				close(l.whole)
			}
			return
		}
	}
}

// FilePresent reports whether every chunk of ino is present.
func (l *Layer) FilePresent(ino index.Ino) bool {
	for i := range l.idx.NumChunks(ino) {
		if !l.isPresent(l.idx.ChunkID(ino, i)) {
			return false
		}
	}
	return true
}

// want is one chunk a fetch is to make present, and the call it completes.
type want struct {
	id     int
	c      *call
	chunk  layer.Chunk
	around bool // read-around: not refetched when wrong, counted apart
	shared bool // read-around within the reader's own blob range: no bytes of its own
	steal  bool // fetched ahead of the background span that claimed it
	// reported: this owner has completed the call (contain fails the
	// others)
	reported bool
}

// span is one request of a fetch: where its stream has got to, for readers
// deciding whether to wait for it.
type span struct {
	background bool
	predict    bool         // a reader's or a prediction's: its chunks, once stored, tell what is read next (predictAfter)
	pos        atomic.Int64 // blob offset up to which bytes have arrived

	// a background span's preemption (preempt.go)
	ws        []want                  // its chunks (set once, under Layer.mu)
	streamed  bool                    // its chunks arrive one by one
	stop      context.CancelCauseFunc // ends its request
	preempted atomic.Bool             // its chunks past cut were released
	cut       atomic.Int64            // it stops once its bytes reach this offset
}

func (l *Layer) chunkOf(id int) layer.Chunk {
	ino := l.owner[id]
	return l.idx.Chunk(ino, id-l.idx.ChunkID(ino, 0))
}

// claimLocked registers a call owned by sp for id. l.mu is held.
func (l *Layer) claimLocked(id int, sp *span) want {
	c := &call{done: make(chan struct{}), span: sp, owners: 1}
	l.inflight[id] = c
	return want{id: id, c: c, chunk: l.chunkOf(id)}
}

// claim registers a call for every id that is neither present nor being
// fetched, and returns those (to fetch, by sp) and every call to wait for.
func (l *Layer) claim(ids []int, sp *span) (mine, wait []want) {
	return l.claimAs(ids, sp, false)
}

// complete reports one owner's result for w's call: the first success
// closes it, a failure only once no other owner is left.
func (l *Layer) complete(w *want, err error) {
	w.reported = true
	l.mu.Lock()
	defer l.mu.Unlock()
	c := w.c
	if c.closed {
		return
	}
	c.owners--
	if err != nil && c.owners > 0 {
		return
	}
	c.closed, c.err = true, err
	if l.inflight[w.id] == c {
		delete(l.inflight, w.id)
	}
	close(c.done)
}

// ErrClosed: the layer was closed (unmounted) while a read waited.
var ErrClosed = errors.New("fetch: layer closed")

// failClosed completes the calls of ws, which no fetch will serve: the
// layer is closed.
func (l *Layer) failClosed(ws []want) {
	for i := range ws {
		l.complete(&ws[i], ErrClosed)
	}
}

// settled reports whether w's call has been completed (by another owner).
func (l *Layer) settled(w *want) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return w.c.closed
}

// Ensure makes chunks [from, to] of ino present, fetching what is missing
// (with read-around, for a small file). The fetch runs detached from ctx;
// if ctx ends first, ensure returns its error and the fetch goes on for
// whoever else waits. A bad layer fails at once, with its PanicError.
func (l *Layer) Ensure(ctx context.Context, ino index.Ino, from, to int) error {
	if err := l.Bad(); err != nil {
		return err
	}
	l.NoteAccess(ino, from, to)
	ids := make([]int, 0, to-from+1)
	for i := from; i <= to; i++ {
		ids = append(ids, l.idx.ChunkID(ino, i))
	}
	sp := &span{predict: true}
	mine, wait := l.claimAs(ids, sp, true)
	defer l.unwait(wait)
	if len(wait) == 0 {
		if from == 0 { // read around, prefetched or a span's: what it says comes next may not be
			l.fetchPredicted(append(l.executableRest(ino), l.predictIDs(ino, 0)...), nil)
		}
		return nil
	}
	l.waiting()
	defer l.waited()
	if l.opts.OnReadLatency != nil {
		start := time.Now()
		defer func() { l.opts.OnReadLatency(time.Since(start)) }()
	}
	l.preempt(ino)
	if len(mine) > 0 {
		l.misses.Add(1)
		ws := append(mine, l.claimAround(ino, mine, sp)...)
		ws = append(ws, l.withShared(l.wholeExecutable(ino, mine, sp), sp)...)
		if !l.spawn(func() { l.fetchSpan(sp, ws) }) {
			l.failClosed(ws)
		}
	}
	if stolen := l.steal(wait); len(stolen) > 0 {
		if !l.spawn(func() { l.fetchSpan(&span{}, stolen) }) {
			l.failClosed(stolen)
		}
	}
	for _, w := range wait {
		select {
		case <-w.c.done:
			if w.c.err != nil {
				return w.c.err
			}
		case <-ctx.Done():
			return &Interrupted{ctx.Err()}
		}
	}
	return nil
}

// steal takes a second ownership of the chunks among wait that a
// background span claimed but whose stream is still more than StreamWait
// bytes before them, for the reader to fetch them itself.
func (l *Layer) steal(wait []want) []want {
	if l.opts.StreamWait < 0 {
		return nil
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []want
	for _, w := range wait {
		c := w.c
		if c.span == nil || !c.span.background || c.closed || c.stolen {
			continue
		}
		chunk := l.chunkOf(w.id)
		if chunk.Offset-c.span.pos.Load() <= l.opts.StreamWait {
			continue
		}
		c.stolen = true
		c.owners++
		out = append(out, want{id: w.id, c: c, chunk: chunk, steal: true})
	}
	l.steals.Add(int64(len(out)))
	return out
}

// ReadAhead starts fetching up to ReadAhead chunks of ino from chunk i, one
// request each so that they travel in parallel.
func (l *Layer) ReadAhead(ino index.Ino, i int) {
	end := min(i+l.opts.ReadAhead, l.idx.NumChunks(ino))
	for ; i < end; i++ {
		select {
		case l.sem <- struct{}{}:
		default:
			return // enough read-ahead in flight already
		}
		sp := &span{}
		mine, _ := l.claim([]int{l.idx.ChunkID(ino, i)}, sp)
		if len(mine) == 0 {
			<-l.sem
			continue
		}
		if !l.spawn(func() {
			defer func() { <-l.sem }()
			l.fetchSpan(sp, mine)
		}) {
			<-l.sem
			l.failClosed(mine)
			return
		}
	}
}

// fetchSpan fetches the chunks of ws (owned by sp) with one range request,
// verifies each, stores it, and completes their calls: the reader's own
// chunks first, and a read-around chunk's failure is its own.
func (l *Layer) fetchSpan(sp *span, ws []want) {
	defer l.contain(ws)
	ctx, cancel := context.WithTimeout(l.ctx, l.opts.FetchTimeout)
	defer cancel()
	lo, hi := int64(-1), int64(0)
	for _, w := range ws {
		if lo < 0 || w.chunk.Offset < lo {
			lo = w.chunk.Offset
		}
		hi = max(hi, w.chunk.End)
	}
	sp.pos.Store(lo)
	rs, streamed := l.blob.(RangeStreamer)
	streamed = streamed && len(ws) > 1 && l.recent.head(lo, 1) == nil && l.flights.covering(lo, hi-lo) == nil
	if sp.background {
		var stop context.CancelCauseFunc
		ctx, stop = context.WithCancelCause(ctx)
		defer stop(nil)
		defer l.registerBackground(sp, ws, streamed, stop)()
	}
	if streamed {
		l.streamSpan(ctx, rs, sp, ws, lo, hi)
		return
	}
	raw, err := l.readShared(ctx, lo, hi-lo, !sp.background)
	if err == nil {
		l.recent.consume(lo, hi-lo) // what entry checks left there: these chunks are stored next
	}
	sp.pos.Store(hi)
	if sp.background {
		l.bgRelease(hi - lo)
	}
	sort.SliceStable(ws, func(i, j int) bool { return !ws[i].around && ws[j].around })
	for k := range ws {
		w := &ws[k]
		if err == nil {
			l.complete(w, l.storeLook(ctx, sp, w, raw[w.chunk.Offset-lo:w.chunk.End-lo], nil))
			continue
		}
		l.complete(w, err)
	}
}

// storeWant stores w from its bytes, unless another owner already has.
func (l *Layer) storeWant(ctx context.Context, w *want, raw []byte) error {
	if l.settled(w) {
		return nil
	}
	err := l.store(ctx, w.id, &w.chunk, raw, !w.around)
	if err == nil && w.around {
		l.aroundChunks.Add(1)
		if !w.shared {
			l.aroundBytes.Add(w.chunk.CompressedSize())
		}
	}
	return err
}

// streamSpan is fetchSpan over a RangeStreamer: each chunk is verified,
// stored and completed as soon as its last byte has arrived.
func (l *Layer) streamSpan(ctx context.Context, rs RangeStreamer, sp *span, ws []want, lo, hi int64) {
	sort.Slice(ws, func(i, j int) bool { return ws[i].chunk.End < ws[j].chunk.End })
	next := 0
	var got int64
	l.requests.Add(1)
	ended := make(chan struct{}) // predictions made at the stream's last bytes wait for its connection
	defer close(ended)
	// a reader's or a prediction's stream is waited for by reads it
	// covers; a background one is not (a reader fetches its chunk itself
	// when the stream is far from it: steal)
	var f *rawFlight
	if !sp.background {
		f = l.flights.start(lo, hi-lo)
	}
	var last []byte
	err := rs.StreamRange(ctx, lo, hi-lo, func(buf []byte) {
		last = buf
		if f != nil {
			f.progress(buf)
		}
		if sp.background {
			l.bgRelease(int64(len(buf)) - got)
		}
		got = int64(len(buf))
		sp.pos.Store(lo + got)
		for ; next < len(ws) && ws[next].chunk.End-lo <= got; next++ {
			w := &ws[next]
			var after <-chan struct{}
			if got == hi-lo {
				after = ended
			}
			l.complete(w, l.storeLook(ctx, sp, w, buf[w.chunk.Offset-lo:w.chunk.End-lo], after))
		}
		if sp.background {
			sp.stopAtCut()
		}
	})
	if f != nil {
		l.flights.finish(f, last, err)
	}
	if sp.background {
		l.bgRelease(hi - lo - got)
	}
	l.fetched.Add(got)
	l.recent.consume(lo, got)
	if err == nil && next < len(ws) {
		err = fmt.Errorf("stream ended after %d of %d bytes", got, hi-lo)
	}
	if next < len(ws) && !l.allSettled(ws[next:]) { // not all released by preempt
		err = l.fail(&BlobError{fmt.Errorf("fetch: layer %s: reading blob range %d+%d: %w", l.opts.Name, lo, hi-lo, err)})
	}
	for ; next < len(ws); next++ {
		l.complete(&ws[next], err)
	}
}

func (l *Layer) fail(err error) error {
	l.errs.Add(1)
	if l.opts.OnError != nil {
		l.opts.OnError(err)
	}
	return err
}
