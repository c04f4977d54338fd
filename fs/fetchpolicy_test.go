package fs_test

import (
	"archive/tar"
	"bytes"
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/lazysnap/lazysnap/estargz"
	"github.com/lazysnap/lazysnap/fs/fetch"
	"github.com/lazysnap/lazysnap/index"
)

// stdlibTar is a layer laid out like a language's standard library: a large
// file, 21 small modules lib/m00..m20 one after another, another large file.
func stdlibTar() (tarball []byte, content map[string][]byte) { return stdlibTarN(21) }

// stdlibTarN is stdlibTar with n modules.
func stdlibTarN(n int) (tarball []byte, content map[string][]byte) {
	rng := rand.New(rand.NewPCG(3, 4))
	random := func(n int) []byte {
		b := make([]byte, n)
		for i := range b {
			b[i] = byte(rng.IntN(256))
		}
		return b
	}
	content = map[string][]byte{}
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	add := func(name string, data []byte) {
		content[name] = data
		tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: 0o644, Size: int64(len(data))})
		tw.Write(data)
	}
	add("big1", random(512<<10))
	for i := range n {
		add(fmt.Sprintf("lib/m%02d", i), random(2000))
	}
	add("big2", random(512<<10))
	tw.Close()
	return buf.Bytes(), content
}

// chunkOf returns the (only) chunk of a small file of the converted blob.
func chunkOf(t *testing.T, blob []byte, name string) estargz.Chunk {
	t.Helper()
	r, err := estargz.Open(io.NewSectionReader(bytes.NewReader(blob), 0, int64(len(blob))), estargz.WithoutTOCVerification()) // a blob this test wrote
	if err != nil {
		t.Fatal(err)
	}
	x, err := index.Build(r.TOC().Entries, r.TOC().LayerInfo())
	if err != nil {
		t.Fatal(err)
	}
	ino, ok := x.LookupPath(name)
	if !ok || x.NumChunks(ino) != 1 {
		t.Fatalf("%s: not a one-chunk file", name)
	}
	return x.Chunk(ino, 0)
}

// corruptOnce flips a byte at one blob offset the first time a read covers it.
type corruptOnce struct {
	*memBlob
	mu   sync.Mutex
	at   int64
	done bool
}

func (b *corruptOnce) ReadRange(ctx context.Context, off, n int64) ([]byte, error) {
	p, err := b.memBlob.ReadRange(ctx, off, n)
	b.mu.Lock()
	defer b.mu.Unlock()
	if err == nil && !b.done && b.at >= off && b.at < off+n {
		p[b.at-off] ^= 0xff
		b.done = true
	}
	return p, err
}

// TestReadAround: a cold read of one small file fetches, in the same single
// request, its small neighbours in blob order, within the budget, never a
// large file's chunks; they are then read without a request; a neighbour
// that fails verification fails neither the reader nor a later read of it.
func TestReadAround(t *testing.T) {
	tarball, content := stdlibTar()
	for _, tc := range []struct {
		name        string
		file        string
		readAround  int64
		corrupt     string // a neighbour whose bytes come wrong the first time
		wantPresent int    // chunks present after the read; 0: check the budget only
		wantAll     int64  // requests after reading every module; 0: unchecked
	}{
		{name: "all neighbours", file: "lib/m10", readAround: 1 << 20, wantPresent: 21, wantAll: 1},
		{name: "first module: not into the large file before", file: "lib/m00", readAround: 1 << 20, wantPresent: 21, wantAll: 1},
		{name: "last module: not into the large file after", file: "lib/m20", readAround: 1 << 20, wantPresent: 21, wantAll: 1},
		{name: "within the budget", file: "lib/m10", readAround: 8 << 10},
		{name: "off", file: "lib/m10", readAround: -1, wantPresent: 1, wantAll: 21},
		{name: "a neighbour fails verification", file: "lib/m10", readAround: 1 << 20, corrupt: "lib/m11", wantPresent: 20, wantAll: 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var wrapped *corruptOnce
			l, blob := layerOver(t, tarball, fetch.Options{NoPrefetch: true, NoBackground: true, ReadAround: tc.readAround},
				func(b *memBlob) fetch.BlobReader {
					wrapped = &corruptOnce{memBlob: b, at: -1}
					if tc.corrupt != "" {
						c := chunkOf(t, b.data, tc.corrupt)
						wrapped.at = (c.Offset + c.End) / 2
					}
					return wrapped
				}, estargz.WithChunkSize(64<<10))
			mnt, _ := mount(t, l)
			own := chunkOf(t, blob.data, tc.file)
			if got, err := os.ReadFile(filepath.Join(mnt, tc.file)); err != nil || !bytes.Equal(got, content[tc.file]) {
				t.Fatalf("read %s: %v", tc.file, err)
			}
			// the reader's chunk is served first; the neighbours follow
			waitFor(t, "read-around stored", func() bool { return l.Stats().InFlight == 0 })
			st := l.Stats()
			if st.Requests != 1 {
				t.Errorf("the read made %d requests, want 1", st.Requests)
			}
			if tc.wantPresent > 0 && st.ChunksPresent != tc.wantPresent {
				t.Errorf("%d chunks present, want %d", st.ChunksPresent, tc.wantPresent)
			}
			if int64(st.ChunksPresent) != 1+st.ReadAroundChunks {
				t.Errorf("%d chunks present, %d of them read around", st.ChunksPresent, st.ReadAroundChunks)
			}
			if budget := max(tc.readAround, 0); st.FetchedBytes > own.CompressedSize()+budget || st.ReadAroundBytes > budget {
				t.Errorf("fetched %d bytes (%d read around) for a %d-byte chunk, budget %d", st.FetchedBytes, st.ReadAroundBytes, own.CompressedSize(), budget)
			}
			if tc.readAround > 0 && st.ReadAroundChunks == 0 {
				t.Errorf("nothing read around")
			}
			// the present neighbours are read without a request; the others
			// (and the one that failed) with one each
			for i := range 21 {
				name := fmt.Sprintf("lib/m%02d", i)
				before := blob.requests.Load()
				present := l.Stats().ChunksPresent
				if got, err := os.ReadFile(filepath.Join(mnt, name)); err != nil || !bytes.Equal(got, content[name]) {
					t.Fatalf("read %s: %v", name, err)
				}
				waitFor(t, "read-around stored", func() bool { return l.Stats().InFlight == 0 })
				if made := blob.requests.Load() - before; made != 0 && l.Stats().ChunksPresent == present {
					t.Errorf("%s: present, but its read made %d requests", name, made)
				}
			}
			if n := blob.requests.Load(); tc.wantAll > 0 && n != tc.wantAll {
				t.Errorf("reading every module made %d requests, want %d", n, tc.wantAll)
			}
			if tc.corrupt != "" && st.Errors != 1 {
				t.Errorf("errors %d, want the one of the corrupt neighbour", st.Errors)
			}
		})
	}
}

// rangeLog records the ranges read.
type rangeLog struct {
	*memBlob
	mu     sync.Mutex
	ranges [][2]int64
}

func (b *rangeLog) ReadRange(ctx context.Context, off, n int64) ([]byte, error) {
	b.mu.Lock()
	b.ranges = append(b.ranges, [2]int64{off, n})
	b.mu.Unlock()
	return b.memBlob.ReadRange(ctx, off, n)
}

// TestReadAroundForwards: bytes before the reader's chunk delay it (the
// request streams in blob order), so read-around takes at most an eighth
// of its budget backwards and the rest forwards.
func TestReadAroundForwards(t *testing.T) {
	tarball, content := stdlibTar()
	const budget = 16 << 10
	var log *rangeLog
	l, blob := layerOver(t, tarball, fetch.Options{NoPrefetch: true, NoBackground: true, ReadAround: budget},
		func(b *memBlob) fetch.BlobReader { log = &rangeLog{memBlob: b}; return log }, estargz.WithChunkSize(64<<10))
	mnt, _ := mount(t, l)
	if got, err := os.ReadFile(filepath.Join(mnt, "lib/m10")); err != nil || !bytes.Equal(got, content["lib/m10"]) {
		t.Fatalf("read lib/m10: %v", err)
	}
	waitFor(t, "read-around stored", func() bool { return l.Stats().InFlight == 0 })
	own := chunkOf(t, blob.data, "lib/m10")
	log.mu.Lock()
	defer log.mu.Unlock()
	if len(log.ranges) != 1 {
		t.Fatalf("the read made requests %v, want one", log.ranges)
	}
	r := log.ranges[0]
	back, fwd := own.Offset-r[0], r[0]+r[1]-own.End
	if back < 0 || back > budget/8 || fwd <= 0 || fwd > budget {
		t.Fatalf("read %d bytes around backwards and %d forwards, want at most %d and some, up to %d", back, fwd, budget/8, budget)
	}
}

// fakeClock stands still until told; every After it is asked for is
// handed to the test, which fires it.
type fakeClock struct {
	mu     sync.Mutex
	now    time.Time
	afters chan fakeAfter
}

type fakeAfter struct {
	d  time.Duration
	ch chan time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) advance(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

func (c *fakeClock) After(d time.Duration) <-chan time.Time {
	a := fakeAfter{d: d, ch: make(chan time.Time, 1)}
	c.afters <- a
	return a.ch
}

// guard fails the test if ch yields nothing: a deadlock detector, never a
// deadline the behaviour has to meet.
func guard[T any](t *testing.T, ch <-chan T, what string) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(30 * time.Second):
		t.Fatalf("stuck: %s", what)
		panic("unreachable")
	}
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(30 * time.Second); !cond(); time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("stuck: %s", what)
		}
	}
}

// TestBackgroundWaitsForQuiet: background fetch issues nothing until the
// mount has been quiet for BackgroundQuiet, measured from Start and then
// from the end of the last on-demand read; then it fetches every chunk.
func TestBackgroundWaitsForQuiet(t *testing.T) {
	tarball, content := stdlibTar()
	clock := &fakeClock{now: time.Unix(1000, 0), afters: make(chan fakeAfter, 16)}
	const quiet = 300 * time.Millisecond
	l, blob := layerOf(t, tarball, fetch.Options{NoPrefetch: true, BackgroundQuiet: quiet, Clock: clock, ReadAround: -1}, estargz.WithChunkSize(64<<10))
	mnt, _ := mount(t, l)
	l.Start()
	a := guard(t, clock.afters, "background asks for the quiet period")
	if a.d != quiet || blob.requests.Load() != 0 {
		t.Fatalf("at Start: waits %v with %d requests, want %v with none", a.d, blob.requests.Load(), quiet)
	}
	clock.advance(200 * time.Millisecond)
	if got, err := os.ReadFile(filepath.Join(mnt, "lib/m05")); err != nil || !bytes.Equal(got, content["lib/m05"]) {
		t.Fatalf("read: %v", err)
	}
	a.ch <- time.Time{} // Start's quiet period would be over had there been no read
	a = guard(t, clock.afters, "background waits again after the read")
	if a.d != quiet || blob.requests.Load() != 1 {
		t.Fatalf("after the read: waits %v with %d requests, want %v with the read's 1", a.d, blob.requests.Load(), quiet)
	}
	clock.advance(100 * time.Millisecond)
	a.ch <- time.Time{}
	a = guard(t, clock.afters, "background waits the rest")
	if a.d != quiet-100*time.Millisecond || blob.requests.Load() != 1 {
		t.Fatalf("100ms after the read: waits %v with %d requests", a.d, blob.requests.Load())
	}
	clock.advance(a.d)
	a.ch <- time.Time{}
	waitFor(t, "background done", func() bool { return l.Stats().BackgroundDone })
	if st := l.Stats(); st.ChunksPresent != st.Chunks {
		t.Errorf("background done with %d of %d chunks", st.ChunksPresent, st.Chunks)
	}
	select {
	case a := <-clock.afters:
		t.Errorf("background waited %v more with no read", a.d)
	default:
	}
}

// ctlBlob streams ranges only as far as the test releases them, and logs
// every request in order. Once it flows, streams are sent whole.
type ctlBlob struct {
	*memBlob
	mu      sync.Mutex
	log     []string
	flowing bool
	held    []*ctlStream
	started chan *ctlStream
}

type ctlStream struct {
	off, n int64
	allow  chan int64 // blob offset up to which bytes may be sent
}

func (b *ctlBlob) record(s string) {
	b.mu.Lock()
	b.log = append(b.log, s)
	b.mu.Unlock()
}

func (b *ctlBlob) requests() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]string(nil), b.log...)
}

func (b *ctlBlob) ReadRange(ctx context.Context, off, n int64) ([]byte, error) {
	b.record(fmt.Sprintf("read %d+%d", off, n))
	return b.memBlob.ReadRange(ctx, off, n)
}

func (b *ctlBlob) StreamRange(ctx context.Context, off, n int64, fn func([]byte)) error {
	b.record(fmt.Sprintf("stream %d+%d", off, n))
	data, err := b.memBlob.ReadRange(ctx, off, n)
	if err != nil {
		return err
	}
	s := &ctlStream{off: off, n: n, allow: make(chan int64, 64)}
	b.mu.Lock()
	flowing := b.flowing
	if !flowing {
		b.held = append(b.held, s)
	}
	b.mu.Unlock()
	if flowing {
		fn(data)
		return nil
	}
	b.started <- s
	for sent := int64(0); sent < n; {
		select {
		case lim := <-s.allow:
			if k := min(lim-off, n); k > sent {
				sent = k
				fn(data[:sent])
			}
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return nil
}

// release lets the held streams send their bytes before blob offset upTo.
func (b *ctlBlob) release(upTo int64) {
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, s := range b.held {
		s.allow <- upTo
	}
}

// flow lets every stream, held or to come, send everything.
func (b *ctlBlob) flow() {
	b.mu.Lock()
	b.flowing = true
	b.mu.Unlock()
	b.release(1 << 62)
}

// TestOnDemandNotBehindBackground: with background spans in flight and
// held, an on-demand read is served without waiting for them: its chunk's
// request goes out at once when no span has claimed it (and no further
// background span goes out before it); a chunk a span has claimed is
// served as soon as its bytes have arrived, not at the span's end; or,
// when the stream is still far from it, the reader fetches it itself.
// Background then fetches every chunk. Preemption is off: with it, the
// unclaimed read stops the span (fetch's TestPreemptBackground).
func TestOnDemandNotBehindBackground(t *testing.T) {
	tarball, content := stdlibTar()
	const file = "lib/m10"
	for _, tc := range []struct {
		name       string
		spanSize   int64 // BackgroundSpanSize and BackgroundInflight
		streamWait int64
		claimed    bool // the first span holds the reader's chunk
		release    bool // release the span's bytes up to the end of the reader's chunk
		wantOwn    bool // the reader's chunk has a request of its own
	}{
		{name: "unclaimed: requested at once", spanSize: 128 << 10, streamWait: 4 << 20, wantOwn: true},
		{name: "claimed, stream near: served from the stream", spanSize: 4 << 20, streamWait: 4 << 20, claimed: true, release: true},
		{name: "claimed, stream far: fetched on its own", spanSize: 4 << 20, streamWait: 64 << 10, claimed: true, wantOwn: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cb := &ctlBlob{started: make(chan *ctlStream, 64)}
			l, blob := layerOver(t, tarball, fetch.Options{
				NoPrefetch: true, BackgroundQuiet: -1, ReadAround: -1, NoPreempt: true,
				BackgroundSpanSize: tc.spanSize, BackgroundInflight: tc.spanSize, StreamWait: tc.streamWait,
			}, func(b *memBlob) fetch.BlobReader { cb.memBlob = b; return cb }, estargz.WithChunkSize(64<<10))
			own := chunkOf(t, blob.data, file)
			mnt, _ := mount(t, l)
			l.Start()
			first := guard(t, cb.started, "the first background span")
			if covers := first.off <= own.Offset && own.End <= first.off+first.n; covers != tc.claimed {
				t.Fatalf("span %d+%d vs the chunk at %d: the case is not what it says", first.off, first.n, own.Offset)
			}
			done := make(chan error, 1)
			go func() {
				got, err := os.ReadFile(filepath.Join(mnt, file))
				if err == nil && !bytes.Equal(got, content[file]) {
					err = fmt.Errorf("wrong content")
				}
				done <- err
			}()
			if tc.release {
				waitFor(t, "the reader waits", func() bool { return l.Stats().Waiting == 1 })
				cb.release(own.End)
			}
			if err := guard(t, done, "the on-demand read while the span is held"); err != nil {
				t.Fatal(err)
			}
			log := cb.requests()
			want := []string{fmt.Sprintf("stream %d+%d", first.off, first.n)}
			if tc.wantOwn {
				want = append(want, fmt.Sprintf("read %d+%d", own.Offset, own.CompressedSize()))
			}
			if fmt.Sprint(log) != fmt.Sprint(want) {
				t.Errorf("requests while the span is held: %q, want %q", log, want)
			}
			if steals := l.Stats().Steals; steals != int64(btoi(tc.claimed && tc.wantOwn)) {
				t.Errorf("%d steals", steals)
			}
			cb.flow()
			waitFor(t, "background done", func() bool { return l.Stats().BackgroundDone })
			if st := l.Stats(); st.ChunksPresent != st.Chunks {
				t.Errorf("background done with %d of %d chunks", st.ChunksPresent, st.Chunks)
			}
		})
	}
}

func btoi(b bool) int {
	if b {
		return 1
	}
	return 0
}

// heldBlob answers every read only once released, whatever its context
// says (a fetch shared with other readers outlives one that gave up).
type heldBlob struct {
	*memBlob
	asked   chan struct{}
	release chan struct{}
}

func (b *heldBlob) ReadRange(ctx context.Context, off, n int64) ([]byte, error) {
	select {
	case b.asked <- struct{}{}:
	default:
	}
	<-b.release
	return b.memBlob.ReadRange(context.Background(), off, n)
}

// TestCloseWaitsForFetches: a fetch a reader started is waited for by
// Close, and stores nothing once Close has begun: no content file appears
// under ContentDir after Close (Cleanup may remove it then, and a later
// mount of the layer reads what it verified itself).
func TestCloseWaitsForFetches(t *testing.T) {
	tarball, _ := stdlibTar()
	content := t.TempDir()
	var hb *heldBlob
	l, _ := layerOver(t, tarball, fetch.Options{NoPrefetch: true, NoBackground: true, ReadAround: -1, ContentDir: content},
		func(b *memBlob) fetch.BlobReader {
			hb = &heldBlob{memBlob: b, asked: make(chan struct{}, 1), release: make(chan struct{})}
			return hb
		}, estargz.WithChunkSize(64<<10))
	mnt, m := mount(t, l)
	var once sync.Once
	release := func() { once.Do(func() { close(hb.release) }) }
	t.Cleanup(release) // a failing test must not leave the read hanging
	read := make(chan error, 1)
	go func() {
		_, err := os.ReadFile(filepath.Join(mnt, "lib/m03"))
		read <- err
	}()
	<-hb.asked
	closed := make(chan struct{})
	go func() {
		l.Close()
		close(closed)
	}()
	select {
	case <-closed:
		t.Fatal("Close returned while a fetch was in flight")
	case <-time.After(50 * time.Millisecond): // Close waits; the fetch has not been released
	}
	release()
	<-closed
	if err := <-read; err == nil {
		t.Fatal("a read of a closed layer succeeded")
	}
	m.Unmount()
	if ents, _ := os.ReadDir(content); len(ents) != 0 {
		t.Fatalf("content files after Close: %d", len(ents))
	}
}

// TestBackgroundWaitsForProfile: a learned profile's prefetch counts as
// readers do: no background span is issued while it is in flight.
func TestBackgroundWaitsForProfile(t *testing.T) {
	tarball, _ := stdlibTar()
	var hb *heldBlob
	l, _ := layerOver(t, tarball, fetch.Options{NoPrefetch: true, BackgroundQuiet: -1, ReadAround: -1},
		func(b *memBlob) fetch.BlobReader {
			hb = &heldBlob{memBlob: b, asked: make(chan struct{}, 1), release: make(chan struct{})}
			return hb
		}, estargz.WithChunkSize(64<<10))
	var once sync.Once
	release := func() { once.Do(func() { close(hb.release) }) }
	t.Cleanup(release)
	done := l.PrefetchChunks([]fetch.ChunkRef{{Ino: 1, Chunk: 0}}) // big1's first chunk (ino 0 is the root)
	select {
	case <-hb.asked: // the profile's request is in flight
	case <-time.After(30 * time.Second): // a deadlock guard, not a timing assertion
		t.Fatal("the profile's prefetch made no request")
	}
	l.Start()
	for range 100 { // give a background span every chance to be issued
		runtime.Gosched()
	}
	if st := l.Stats(); st.InFlight != 1 {
		t.Fatalf("%d chunks in flight while the profile's prefetch is, want its 1", st.InFlight)
	}
	release()
	<-done
	waitFor(t, "background done", func() bool { return l.Stats().BackgroundDone })
}

// TestBackgroundHoldsNoDescriptors: storing a layer's files (here by the
// background fetch) leaves no content file open; only files readers read
// are kept open. A layer of 100k files held one descriptor each, and the
// daemon ran out of them.
func TestBackgroundHoldsNoDescriptors(t *testing.T) {
	tarball, _ := stdlibTarN(300)
	content := t.TempDir()
	l, _ := layerOver(t, tarball, fetch.Options{NoPrefetch: true, BackgroundQuiet: -1, ContentDir: content},
		func(b *memBlob) fetch.BlobReader { return b }, estargz.WithChunkSize(64<<10))
	l.Start()
	waitFor(t, "background done", func() bool { return l.Stats().BackgroundDone })
	if ents, _ := os.ReadDir(content); len(ents) < 300 {
		t.Fatalf("%d content files after the background fetch, want the 300 modules'", len(ents))
	}
	fds, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Skipf("no /proc/self/fd: %v", err)
	}
	open := 0
	for _, fd := range fds {
		if target, err := os.Readlink(filepath.Join("/proc/self/fd", fd.Name())); err == nil && strings.HasPrefix(target, content) {
			open++
		}
	}
	if open != 0 {
		t.Fatalf("%d content files held open after the background stored them", open)
	}
}
