package fetch

import (
	"bytes"
	"context"
	"errors"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/lazysnap/lazysnap/estargz"
	"github.com/lazysnap/lazysnap/index"
)

// gateBlob serves a blob once its gate is opened, counting requests.
type gateBlob struct {
	data     []byte
	gate     chan struct{}
	requests chan struct{}
}

func (b *gateBlob) ReadRange(ctx context.Context, off, n int64) ([]byte, error) {
	b.requests <- struct{}{}
	select {
	case <-b.gate:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	return bytes.Clone(b.data[off : off+n]), nil
}

// TestCancelledReaderDoesNotCancelOthers: a reader interrupted while its
// chunk is being fetched gets EINTR; the fetch goes on, and a second reader
// waiting for the same chunk gets the data from that one fetch.
func TestCancelledReaderDoesNotCancelOthers(t *testing.T) {
	x, data := syntheticLayer(t)
	blob := &gateBlob{data: data, gate: make(chan struct{}), requests: make(chan struct{}, 10)}
	l, err := NewLayer(x, blob, Options{ContentDir: t.TempDir(), NoPrefetch: true, NoBackground: true, Decoder: estargz.Decoder{}})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	ino, _ := x.LookupPath("big")

	ctx1, cancel := context.WithCancel(context.Background())
	first := make(chan error)
	go func() { first <- l.Ensure(ctx1, ino, 0, 0) }()
	<-blob.requests // the fetch is in flight
	second := make(chan error)
	go func() { second <- l.Ensure(context.Background(), ino, 0, 0) }()
	cancel()
	var intr *Interrupted
	if err := <-first; !errors.As(err, &intr) {
		t.Fatalf("cancelled reader: %v, want an Interrupted (EINTR)", err)
	}
	close(blob.gate)
	select {
	case err := <-second:
		if err != nil {
			t.Fatalf("second reader: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("second reader never finished")
	}
	if n := len(blob.requests); n != 0 {
		t.Fatalf("%d more requests: the cancelled reader's fetch was not shared", n)
	}
	if !l.isPresent(x.ChunkID(ino, 0)) {
		t.Fatal("chunk not present after the shared fetch")
	}
}

// rangeVerifier is an EntryVerifier over the eStargz decoder whose check
// of an inode reads the blob's first 4 KiB.
type rangeVerifier struct{ estargz.Decoder }

func (rangeVerifier) VerifyEntry(ctx context.Context, ino index.Ino, blob BlobReader) error {
	_, err := blob.ReadRange(ctx, 0, 4096)
	return err
}

// gatedCheckLayer is a layer whose entry checks read the blob's first
// 4 KiB through a gateBlob (closed with the test), and the inode of its
// file big.
func gatedCheckLayer(t *testing.T) (*Layer, *gateBlob, index.Ino) {
	t.Helper()
	x, data := syntheticLayer(t)
	blob := &gateBlob{data: data, gate: make(chan struct{}), requests: make(chan struct{}, 10)}
	l, err := NewLayer(x, blob, Options{ContentDir: t.TempDir(), NoPrefetch: true, NoBackground: true, Decoder: rangeVerifier{}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	ino, _ := x.LookupPath("big")
	return l, blob, ino
}

// TestInterruptedEntryCheckGoesOn: a request interrupted while its inode's
// entry check fetches gets EINTR, and the check goes on: the restarted
// request waits for that one fetch instead of starting another (a Go
// caller's preemption signals restarted a check that was cancelled with
// each interrupt, for minutes).
func TestInterruptedEntryCheckGoesOn(t *testing.T) {
	l, blob, ino := gatedCheckLayer(t)

	for i := range 3 { // interrupted three times, as a restarting syscall is
		ctx, cancel := context.WithCancel(context.Background())
		first := make(chan error)
		go func() { _, err := l.VerifyEntry(ctx, ino); first <- err }()
		if i == 0 {
			<-blob.requests // the check's fetch is in flight
		}
		cancel()
		var intr *Interrupted
		if err := <-first; !errors.As(err, &intr) {
			t.Fatalf("interrupted request %d: %v, want an Interrupted (EINTR)", i, err)
		}
	}
	second := make(chan error)
	go func() { _, err := l.VerifyEntry(context.Background(), ino); second <- err }()
	close(blob.gate)
	select {
	case err := <-second:
		if err != nil {
			t.Fatalf("restarted request: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("restarted request never finished")
	}
	if n := len(blob.requests); n != 0 {
		t.Fatalf("%d more requests: the interrupted check was started again", n)
	}
	if !l.EntryVerified(ino) {
		t.Fatal("inode not verified after the check")
	}
}

// prefixVerifier is an EntryVerifier whose check of an inode reads the
// first 100 compressed bytes of its first chunk.
type prefixVerifier struct {
	estargz.Decoder
	x *index.Index
}

func (v prefixVerifier) VerifyEntry(ctx context.Context, ino index.Ino, blob BlobReader) error {
	c := v.x.Chunk(ino, 0)
	_, err := blob.ReadRange(ctx, c.Offset, 100)
	return err
}

// rangesBlob serves a blob, recording each range read.
type rangesBlob struct {
	data   []byte
	mu     sync.Mutex
	ranges [][2]int64
}

func (b *rangesBlob) ReadRange(ctx context.Context, off, n int64) ([]byte, error) {
	b.mu.Lock()
	b.ranges = append(b.ranges, [2]int64{off, n})
	b.mu.Unlock()
	return bytes.Clone(b.data[off : off+n]), nil
}

// TestReadAfterPrefixCheck: the start of a range an entry check read is
// not fetched again by the read that follows: only the rest is.
func TestReadAfterPrefixCheck(t *testing.T) {
	x, data := syntheticLayer(t)
	blob := &rangesBlob{data: data}
	l, err := NewLayer(x, blob, Options{ContentDir: t.TempDir(), NoPrefetch: true, NoBackground: true, Decoder: prefixVerifier{x: x}})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	ino, _ := x.LookupPath("big")
	if _, err := l.VerifyEntry(t.Context(), ino); err != nil {
		t.Fatal(err)
	}
	if err := l.Ensure(t.Context(), ino, 0, 0); err != nil {
		t.Fatal(err)
	}
	c := x.Chunk(ino, 0)
	want := [][2]int64{{c.Offset, 100}, {c.Offset + 100, c.CompressedSize() - 100}}
	if !slices.Equal(blob.ranges, want) {
		t.Fatalf("ranges read %v, want %v", blob.ranges, want)
	}
	if !l.isPresent(x.ChunkID(ino, 0)) {
		t.Fatal("chunk not present")
	}
}

// TestCheckWaitsForReadInFlight: an entry check whose range a reader's
// fetch is reading waits for those bytes instead of fetching them again
// (a SOCI span a prediction fetches while the loader opens a file in it).
func TestCheckWaitsForReadInFlight(t *testing.T) {
	x, data := syntheticLayer(t)
	blob := &gateBlob{data: data, gate: make(chan struct{}), requests: make(chan struct{}, 10)}
	l, err := NewLayer(x, blob, Options{ContentDir: t.TempDir(), NoPrefetch: true, NoBackground: true, NoPredict: true, Decoder: prefixVerifier{x: x}})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	ino, _ := x.LookupPath("big")
	read := make(chan error, 1)
	go func() { read <- l.Ensure(context.Background(), ino, 0, 0) }()
	<-blob.requests // the reader's fetch is in flight
	check := make(chan error, 1)
	go func() { _, err := l.VerifyEntry(context.Background(), ino); check <- err }()
	for deadline := time.Now().Add(10 * time.Second); l.flights.waiting() == 0; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("the check never waited for the read in flight (%d more requests)", len(blob.requests))
		}
	}
	close(blob.gate)
	for _, c := range []chan error{read, check} {
		if err := <-c; err != nil {
			t.Fatal(err)
		}
	}
	if n := len(blob.requests); n != 0 {
		t.Fatalf("%d more requests, want none", n)
	}
	if !l.EntryVerified(ino) || !l.isPresent(x.ChunkID(ino, 0)) {
		t.Fatal("not verified and present")
	}
}

// gateStreamBlob streams a range's first half at once and the rest once
// its gate is opened.
type gateStreamBlob struct{ gateBlob }

func (b *gateStreamBlob) StreamRange(ctx context.Context, off, n int64, fn func([]byte)) error {
	b.requests <- struct{}{}
	buf := make([]byte, 0, n)
	buf = append(buf, b.data[off:off+n/2]...)
	fn(buf)
	select {
	case <-b.gate:
	case <-ctx.Done():
		return ctx.Err()
	}
	fn(append(buf, b.data[off+n/2:off+n]...))
	return nil
}

// TestCheckServedFromStream: an entry check of a range a reader's stream
// has already brought is answered from it before the stream ends, with
// no request of its own, and does not keep those bytes (the stream
// stores its chunks; kept, they pushed out a symlink's prefix that a
// later read needed).
func TestCheckServedFromStream(t *testing.T) {
	x, data := syntheticLayer(t, estargz.WithChunkSize(256<<10))
	blob := &gateStreamBlob{gateBlob{data: data, gate: make(chan struct{}), requests: make(chan struct{}, 10)}}
	l, err := NewLayer(x, blob, Options{ContentDir: t.TempDir(), NoPrefetch: true, NoBackground: true, NoPredict: true, Decoder: prefixVerifier{x: x}})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	ino, _ := x.LookupPath("big")
	if x.NumChunks(ino) < 2 {
		t.Fatal("big has one chunk; the test streams two")
	}
	read := make(chan error, 1)
	go func() { read <- l.Ensure(context.Background(), ino, 0, 1) }()
	<-blob.requests // the stream has brought its first half
	check := make(chan error, 1)
	go func() { _, err := l.VerifyEntry(context.Background(), ino); check <- err }()
	select {
	case err := <-check:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		close(blob.gate)
		t.Fatalf("the check waited for the rest of the stream (%d requests of its own)", len(blob.requests))
	}
	if n := len(blob.requests); n != 0 {
		t.Fatalf("the check made %d requests, want none", n)
	}
	if l.recent.n != 0 {
		t.Errorf("the check kept %d bytes of the stream", l.recent.n)
	}
	close(blob.gate)
	if err := <-read; err != nil {
		t.Fatal(err)
	}
	if !l.EntryVerified(ino) || !l.isPresent(x.ChunkID(ino, 1)) {
		t.Fatal("not verified and present")
	}
}

// badStreamBlob streams its blob with one byte of [bad, bad+1) flipped the
// first time (a registry that got it wrong once); its range reads are
// right.
type badStreamBlob struct {
	rangesBlob
	bad     int64
	flipped bool
}

func (b *badStreamBlob) StreamRange(ctx context.Context, off, n int64, fn func([]byte)) error {
	buf, _ := b.ReadRange(ctx, off, n)
	if !b.flipped && off <= b.bad && b.bad < off+n {
		b.flipped = true
		buf[b.bad-off] ^= 0xff
	}
	fn(buf)
	return nil
}

// TestStreamedBadChunkFetchedAgain: a streamed chunk that fails
// verification is fetched again from the blob, not taken from the stream
// it came in, which is known as in flight until it ends and holds the
// same wrong bytes (the reader got EIO; before streams handed over their
// bytes as they came, the refetch waited for its own stream until the
// fetch timed out).
func TestStreamedBadChunkFetchedAgain(t *testing.T) {
	x, data := syntheticLayer(t)
	ino, _ := x.LookupPath("many/file-001")
	c := x.Chunk(ino, 0)
	blob := &badStreamBlob{rangesBlob: rangesBlob{data: data}, bad: c.Offset + c.CompressedSize()/2}
	l, err := NewLayer(x, blob, Options{ContentDir: t.TempDir(), NoPrefetch: true, NoBackground: true, NoPredict: true, FetchTimeout: 10 * time.Second, Decoder: estargz.Decoder{}})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	if err := l.Ensure(t.Context(), ino, 0, 0); err != nil {
		t.Fatal(err)
	}
	if !blob.flipped || len(blob.ranges) != 2 || blob.ranges[1] != [2]int64{c.Offset, c.CompressedSize()} {
		t.Fatalf("ranges read %v: want a stream with read-around and the chunk again", blob.ranges)
	}
}

// waiting reports how many reads wait for reads in flight.
func (r *rawFlights) waiting() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for _, f := range r.list {
		n += int(f.waiters.Load())
	}
	return n
}
