package fetch

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/lazysnap/lazysnap/estargz"
	"github.com/lazysnap/lazysnap/index"
)

// heldBlob serves on-demand reads (ReadRange) at once and holds streams
// (background spans): each sends only the bytes the test allows, until it
// flows. It tells how each stream ended.
type heldBlob struct {
	data    []byte
	mu      sync.Mutex
	flowing bool
	held    []*heldStream
	started chan *heldStream
}

type heldStream struct {
	off, n int64
	allow  chan int64 // blob offset up to which bytes may be sent
	ended  chan error // the cause of the request's end (nil: sent whole)
}

func (b *heldBlob) ReadRange(ctx context.Context, off, n int64) ([]byte, error) {
	return bytes.Clone(b.data[off : off+n]), nil
}

func (b *heldBlob) StreamRange(ctx context.Context, off, n int64, fn func([]byte)) error {
	data := b.data[off : off+n]
	s := &heldStream{off: off, n: n, allow: make(chan int64, 64), ended: make(chan error, 1)}
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
			s.ended <- context.Cause(ctx)
			return ctx.Err()
		}
	}
	s.ended <- nil
	return nil
}

// flow lets every stream, held or to come, send everything.
func (b *heldBlob) flow() {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.flowing = true
	for _, s := range b.held {
		s.allow <- 1 << 62
	}
}

// twoFiles is an eStargz layer of two files of random bytes, big1 and
// big2, of 8 chunks of 64 KiB each.
func twoFiles(t *testing.T) (*index.Index, []byte) {
	t.Helper()
	rng := rand.New(rand.NewPCG(5, 6))
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, name := range []string{"big1", "big2"} {
		data := make([]byte, 512<<10)
		for i := range data {
			data[i] = byte(rng.IntN(256))
		}
		tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: 0o644, Size: int64(len(data))})
		tw.Write(data)
	}
	tw.Close()
	return indexedLayer(t, buf.Bytes(), estargz.WithChunkSize(64<<10))
}

// within fails the test if ch yields nothing: a deadlock guard, not a
// deadline the behaviour has to meet.
func within[T any](t *testing.T, ch <-chan T, what string) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(30 * time.Second):
		t.Fatalf("stuck: %s", what)
		panic("unreachable")
	}
}

// TestPreemptBackground: a reader that has to wait stops the background
// span in flight, unless a reader waits on one of its chunks, it holds
// chunks of the reader's own file (a sequential reader's next), or
// preemption is off. The span's chunks received are kept, the one under
// way too when its end is within StreamWait; the rest are released
// without an error and fetched again by the background, which completes
// the layer.
func TestPreemptBackground(t *testing.T) {
	for _, tc := range []struct {
		name       string
		noPreempt  bool
		streamWait int64
		sent       float64 // chunks of the span sent before the read (1.5: half of its second)
		read       string  // the file and chunk the reader reads
		chunk      int
		waiter     bool // another reader waits on the span's chunk 2 (of big1)
		check      bool // the reader waits for an entry check of the file, not its chunk
		wantCut    int  // chunks of the span kept (received or finished); -1: not stopped
	}{
		{name: "a miss elsewhere stops the span", streamWait: 1 << 20, read: "big2", wantCut: 0},
		{name: "an entry check's read stops the span", streamWait: 1 << 20, read: "big2", check: true, wantCut: 0},
		{name: "the chunk under way is finished when near", streamWait: 1 << 20, sent: 1.5, read: "big2", wantCut: 2},
		{name: "the chunk under way is dropped when far", streamWait: 1 << 10, sent: 1.5, read: "big2", wantCut: 1},
		{name: "a reader waits on the span: not stopped", streamWait: 1 << 20, read: "big2", waiter: true, wantCut: -1},
		{name: "the reader's own file: not stopped", streamWait: 1 << 20, read: "big1", chunk: 5, wantCut: -1},
		{name: "preemption off", noPreempt: true, streamWait: 1 << 20, read: "big2", wantCut: -1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			x, data := twoFiles(t)
			var dec Decoder = estargz.Decoder{}
			if tc.check {
				dec = prefixVerifier{x: x}
			}
			blob := &heldBlob{data: data, started: make(chan *heldStream, 64)}
			var errs []error
			var errMu sync.Mutex
			l, err := NewLayer(x, blob, Options{
				ContentDir: t.TempDir(), Decoder: dec, NoPrefetch: true, NoPredict: true, ReadAround: -1,
				BackgroundQuiet: -1, BackgroundSpanSize: 256 << 10, BackgroundInflight: 256 << 10,
				StreamWait: tc.streamWait, NoPreempt: tc.noPreempt,
				OnError: func(err error) { errMu.Lock(); errs = append(errs, err); errMu.Unlock() },
			})
			if err != nil {
				t.Fatal(err)
			}
			defer l.Close()
			big1, _ := x.LookupPath("big1")
			l.Start()
			s := within(t, blob.started, "the first background span")
			first, last := x.Chunk(big1, 0), x.Chunk(big1, 3)
			if s.off != first.Offset || s.off+s.n != last.End {
				t.Fatalf("the background span is %d+%d, want big1's chunks 0-3", s.off, s.n)
			}
			if tc.sent > 0 {
				whole := int(tc.sent)
				c := x.Chunk(big1, whole)
				s.allow <- c.Offset + int64((tc.sent-float64(whole))*float64(c.CompressedSize()))
				waitForPresent(t, l, whole)
			}
			waiter := make(chan error, 1)
			if tc.waiter {
				go func() { waiter <- l.Ensure(context.Background(), big1, 2, 2) }()
				for l.Stats().Waiting == 0 { // it has claimed: it waits on the span
					time.Sleep(time.Millisecond)
				}
			}
			ino, _ := x.LookupPath(tc.read)
			read := make(chan error, 1)
			go func() {
				if tc.check {
					_, err := l.VerifyEntry(context.Background(), ino)
					read <- err
					return
				}
				read <- l.Ensure(context.Background(), ino, tc.chunk, tc.chunk)
			}()
			if err := within(t, read, "the read"); err != nil {
				t.Fatal(err)
			}
			if tc.wantCut == 2 { // the span is to stop once its second chunk is in
				s.allow <- x.Chunk(big1, 1).End
			}
			st := l.Stats()
			switch {
			case tc.wantCut < 0:
				if st.Preempted != 0 {
					t.Errorf("%d chunks released, want none", st.Preempted)
				}
				if st.InFlight != 4 {
					t.Errorf("%d chunks in flight after the read, want the span's 4", st.InFlight)
				}
			default:
				if st.Preempted != int64(4-tc.wantCut) {
					t.Fatalf("%d chunks released, want %d", st.Preempted, 4-tc.wantCut)
				}
				if cause := within(t, s.ended, "the span's end"); !errors.Is(cause, errPreempted) {
					t.Errorf("the span ended with %v, want it preempted", cause)
				}
				for i := range 4 {
					if got, want := l.isPresent(x.ChunkID(big1, i)), i < tc.wantCut; got != want {
						t.Errorf("big1 chunk %d present: %v, want %v", i, got, want)
					}
				}
			}
			blob.flow()
			if tc.waiter {
				if err := within(t, waiter, "the waiting reader"); err != nil {
					t.Fatal(err)
				}
			}
			within(t, l.Complete(), "the layer complete")
			errMu.Lock()
			defer errMu.Unlock()
			if st := l.Stats(); st.Errors != 0 || len(errs) != 0 {
				t.Errorf("%d errors: %v", st.Errors, errs)
			}
		})
	}
}

// waitForPresent waits until n chunks of the layer are present.
func waitForPresent(t *testing.T, l *Layer, n int) {
	t.Helper()
	for deadline := time.Now().Add(30 * time.Second); l.Stats().ChunksPresent < n; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("stuck: %d chunks present, want %d", l.Stats().ChunksPresent, n)
		}
	}
}
