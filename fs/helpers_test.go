package fs_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"

	"github.com/lazysnap/lazysnap/estargz"
	lfs "github.com/lazysnap/lazysnap/fs"
	"github.com/lazysnap/lazysnap/fs/fetch"
	"github.com/lazysnap/lazysnap/index"
	"github.com/lazysnap/lazysnap/internal/testenv"
)

// memBlob serves a blob from memory, counting reads, with faults on demand.
type memBlob struct {
	data     []byte
	requests atomic.Int64
	bytes    atomic.Int64
	mu       sync.Mutex
	fail     error // returned by every read while set
	corrupt  bool  // flip a byte of every read while set
	gate     chan struct{}
}

func (b *memBlob) ReadRange(ctx context.Context, off, n int64) ([]byte, error) {
	b.requests.Add(1)
	b.mu.Lock()
	fail, corrupt, gate := b.fail, b.corrupt, b.gate
	b.mu.Unlock()
	if gate != nil {
		select {
		case <-gate:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	if fail != nil {
		return nil, fail
	}
	if off < 0 || off+n > int64(len(b.data)) {
		return nil, errors.New("range outside blob")
	}
	b.bytes.Add(n)
	out := bytes.Clone(b.data[off : off+n])
	if corrupt && n > 20 {
		out[n/2] ^= 0xff
	}
	return out, nil
}

func (b *memBlob) set(fn func(b *memBlob)) {
	b.mu.Lock()
	defer b.mu.Unlock()
	fn(b)
}

func requireFUSE(t testing.TB) {
	t.Helper()
	testenv.NeedFUSE(t)
}

// layerOf converts a tar and prepares a layer over it.
func layerOf(t testing.TB, tarball []byte, opts fetch.Options, convOpts ...estargz.ConvertOption) (*fetch.Layer, *memBlob) {
	t.Helper()
	return layerOver(t, tarball, opts, func(b *memBlob) fetch.BlobReader { return b }, convOpts...)
}

// layerOver is layerOf with the layer reading through wrap(blob).
func layerOver(t testing.TB, tarball []byte, opts fetch.Options, wrap func(*memBlob) fetch.BlobReader, convOpts ...estargz.ConvertOption) (*fetch.Layer, *memBlob) {
	t.Helper()
	l, blob, _ := layerIndexed(t, tarball, opts, wrap, convOpts...)
	return l, blob
}

// layerIndexed is layerOver, returning the layer's index too.
func layerIndexed(t testing.TB, tarball []byte, opts fetch.Options, wrap func(*memBlob) fetch.BlobReader, convOpts ...estargz.ConvertOption) (*fetch.Layer, *memBlob, *index.Index) {
	t.Helper()
	var out bytes.Buffer
	res, err := estargz.Convert(context.Background(), &out, io.NewSectionReader(bytes.NewReader(tarball), 0, int64(len(tarball))), convOpts...)
	if err != nil {
		t.Fatal(err)
	}
	blob := &memBlob{data: out.Bytes()}
	r, err := estargz.Open(io.NewSectionReader(bytes.NewReader(blob.data), 0, int64(len(blob.data))), estargz.WithTOCDigest(res.TOCDigest))
	if err != nil {
		t.Fatal(err)
	}
	x, err := index.Build(r.TOC().Entries, r.TOC().LayerInfo())
	if err != nil {
		t.Fatal(err)
	}
	if opts.ContentDir == "" {
		opts.ContentDir = t.TempDir()
	}
	if opts.Decoder == nil {
		opts.Decoder = estargz.Decoder{}
	}
	l, err := fetch.NewLayer(x, wrap(blob), opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	return l, blob, x
}

// mount mounts l on a new temp dir until the test ends.
func mount(t testing.TB, l *fetch.Layer) (string, *lfs.Mount) {
	t.Helper()
	requireFUSE(t)
	dir := t.TempDir()
	m, err := lfs.MountLayer(l, dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := m.Unmount(); err != nil {
			syscall.Unmount(dir, syscall.MNT_DETACH) // never leave a mount behind
		}
	})
	return dir, m
}

// streamBlob is a memBlob that streams ranges: it hands over the first
// half of each (the prefix received so far), closes halfway (once), waits for hold to be closed, then
// sends the rest, or fails with failAfterHalf.
type streamBlob struct {
	*memBlob
	halfway, hold chan struct{}
	once          sync.Once
	failAfterHalf error
}

func (b *streamBlob) StreamRange(ctx context.Context, off, n int64, fn func([]byte)) error {
	data, err := b.ReadRange(ctx, off, n)
	if err != nil {
		return err
	}
	fn(data[:n/2])
	b.once.Do(func() { close(b.halfway) })
	if b.hold != nil {
		select {
		case <-b.hold:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	if b.failAfterHalf != nil {
		return b.failAfterHalf
	}
	fn(data)
	return nil
}
