package fs

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"syscall"
	"testing"
	"time"

	"github.com/lazysnap/lazysnap/estargz"
	"github.com/lazysnap/lazysnap/index"
	"github.com/lazysnap/lazysnap/internal/testtar"
)

func TestErrno(t *testing.T) {
	for _, tc := range []struct {
		name string
		err  error
		want syscall.Errno
	}{
		{"nil", nil, 0},
		{"cancelled read", fmt.Errorf("waiting: %w", &interrupted{context.Canceled}), syscall.EINTR},
		{"cancelled elsewhere", fmt.Errorf("waiting: %w", context.Canceled), syscall.EIO},
		{"timeout", context.DeadlineExceeded, syscall.EIO},
		{"registry failure", errors.New("connection refused"), syscall.EIO},
		{"verification", fmt.Errorf("chunk: %w", estargz.ErrVerify), syscall.EIO},
		{"errno passes through", fmt.Errorf("x: %w", syscall.ENOENT), syscall.ENOENT},
		{"socket errno of a fetch", &fetchError{fmt.Errorf("read: %w", syscall.ECONNRESET)}, syscall.EIO},
		{"refused fetch", fmt.Errorf("wait: %w", &fetchError{fmt.Errorf("dial: %w", syscall.ECONNREFUSED)}), syscall.EIO},
		{"cancelled fetch", &fetchError{fmt.Errorf("x: %w", context.Canceled)}, syscall.EIO},
		{"unmarked socket errno", fmt.Errorf("stream: %w", syscall.ECONNRESET), syscall.EIO},
		{"unmarked broken pipe", fmt.Errorf("stream: %w", syscall.EPIPE), syscall.EIO},
		{"unmarked timeout errno", fmt.Errorf("stream: %w", syscall.ETIMEDOUT), syscall.EIO},
		{"cache disk full", fmt.Errorf("store: %w", syscall.ENOSPC), syscall.EIO},
		{"ENODATA passes through", fmt.Errorf("x: %w", syscall.ENODATA), syscall.ENODATA},
		{"ENOENT of a fetch", &fetchError{fmt.Errorf("x: %w", syscall.ENOENT)}, syscall.EIO},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := Errno(tc.err); got != tc.want {
				t.Fatalf("Errno(%v) = %v, want %v", tc.err, got, tc.want)
			}
		})
	}
}

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
	tarball := testtar.Synthetic(1 << 20)
	var out bytes.Buffer
	res, err := estargz.Convert(context.Background(), &out, io.NewSectionReader(bytes.NewReader(tarball), 0, int64(len(tarball))))
	if err != nil {
		t.Fatal(err)
	}
	r, err := estargz.Open(io.NewSectionReader(bytes.NewReader(out.Bytes()), 0, int64(out.Len())), estargz.WithTOCDigest(res.TOCDigest))
	if err != nil {
		t.Fatal(err)
	}
	x, err := index.Build(r.TOC().Entries, r.TOC().LayerInfo())
	if err != nil {
		t.Fatal(err)
	}
	blob := &gateBlob{data: out.Bytes(), gate: make(chan struct{}), requests: make(chan struct{}, 10)}
	l, err := NewLayer(x, blob, Options{ContentDir: t.TempDir(), NoPrefetch: true, NoBackground: true, Decoder: estargz.Decoder{}})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	ino, _ := x.LookupPath("big")

	ctx1, cancel := context.WithCancel(context.Background())
	first := make(chan error)
	go func() { first <- l.ensure(ctx1, ino, 0, 0) }()
	<-blob.requests // the fetch is in flight
	second := make(chan error)
	go func() { second <- l.ensure(context.Background(), ino, 0, 0) }()
	cancel()
	if err := <-first; Errno(err) != syscall.EINTR {
		t.Fatalf("cancelled reader: %v (%v), want EINTR", err, Errno(err))
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
