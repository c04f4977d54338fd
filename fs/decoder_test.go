package fs_test

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"sync/atomic"
	"syscall"
	"testing"

	"github.com/lazysnap/lazysnap/estargz"
	"github.com/lazysnap/lazysnap/fs/fetch"
	"github.com/lazysnap/lazysnap/internal/testtar"
)

// gateDecoder is the eStargz decoder behind a switch: while reject is set
// it refuses every chunk, as a format whose own verification failed would.
type gateDecoder struct {
	calls  atomic.Int64
	reject atomic.Bool
}

var _ fetch.Decoder = (*gateDecoder)(nil)

var errRejected = errors.New("decoder: rejected")

func (d *gateDecoder) Decode(dst []byte, c *estargz.Chunk, raw []byte) ([]byte, error) {
	d.calls.Add(1)
	if d.reject.Load() {
		return nil, errRejected
	}
	return estargz.DecodeChunk(dst, c, raw)
}

// TestDecoderDecidesWhatIsServed: every chunk a reader gets went through
// the layer's Decoder, and a chunk the Decoder refuses is EIO (after one
// refetch), reported, never served, and readable once the Decoder accepts.
func TestDecoderDecidesWhatIsServed(t *testing.T) {
	tarball := testtar.Synthetic(1 << 20)
	dec := &gateDecoder{}
	var errs atomic.Int64
	l, blob := layerOf(t, tarball, fetch.Options{Decoder: dec, NoPrefetch: true, NoBackground: true,
		OnError: func(err error) {
			if errors.Is(err, errRejected) {
				errs.Add(1)
			}
		}})
	mnt, _ := mount(t, l)
	for _, tc := range []struct {
		name       string
		file       string
		reject     bool
		wantServed bool
	}{
		{name: "refused chunk is EIO", file: "usr/bin/tool", reject: true},
		{name: "accepted chunk is served", file: "usr/bin/tool", wantServed: true},
		{name: "another file through the decoder", file: "big", wantServed: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dec.reject.Store(tc.reject)
			before, reqs := dec.calls.Load(), blob.requests.Load()
			got, err := os.ReadFile(filepath.Join(mnt, tc.file))
			if dec.calls.Load() == before {
				t.Fatalf("read of cold %s did not call the layer's decoder", tc.file)
			}
			if !tc.wantServed {
				if !errors.Is(err, syscall.EIO) {
					t.Fatalf("read: %v, want EIO", err)
				}
				// each failed read is fetched and refetched once; the kernel
				// may retry a failed page read itself
				if n := blob.requests.Load() - reqs; n < 2 || n%2 != 0 {
					t.Errorf("%d requests, want a fetch and one refetch per read", n)
				}
				return
			}
			if err != nil || !bytes.Equal(got, mustRead(t, tarball, tc.file)) {
				t.Fatalf("read %s: %v (%d bytes)", tc.file, err, len(got))
			}
		})
	}
	if errs.Load() == 0 {
		t.Error("the refusal was not reported to OnError")
	}
}
