package fetch

import (
	"bytes"
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/lazysnap/lazysnap/estargz"
)

// slowBlob serves a blob from memory after a delay.
type slowBlob struct {
	data  []byte
	delay time.Duration
}

func (b *slowBlob) ReadRange(ctx context.Context, off, n int64) ([]byte, error) {
	time.Sleep(b.delay)
	return bytes.Clone(b.data[off : off+n]), nil
}

// TestOnReadLatency: a read that waits for a fetch reports how long it
// waited, once; a read of chunks already present reports nothing.
func TestOnReadLatency(t *testing.T) {
	x, data := syntheticLayer(t)
	const delay = 30 * time.Millisecond
	var calls, total atomic.Int64
	l, err := NewLayer(x, &slowBlob{data: data, delay: delay}, Options{
		ContentDir: t.TempDir(), NoPrefetch: true, NoBackground: true, Decoder: estargz.Decoder{},
		OnReadLatency: func(d time.Duration) { calls.Add(1); total.Add(int64(d)) },
	})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	ino, ok := x.LookupPath("big")
	if !ok {
		t.Fatal("no big file in the synthetic layer")
	}
	if err := l.Ensure(context.Background(), ino, 0, 0); err != nil {
		t.Fatal(err)
	}
	if n := calls.Load(); n != 1 {
		t.Fatalf("cold read: %d latency reports, want 1", n)
	}
	if d := time.Duration(total.Load()); d < delay {
		t.Fatalf("cold read reported %v, want at least the fetch's %v", d, delay)
	}
	if err := l.Ensure(context.Background(), ino, 0, 0); err != nil {
		t.Fatal(err)
	}
	if n := calls.Load(); n != 1 {
		t.Fatalf("read of a present chunk reported a latency (%d reports)", n)
	}
}
