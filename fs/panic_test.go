package fs_test

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/lazysnap/lazysnap/estargz"
	"github.com/lazysnap/lazysnap/fs/fetch"
	"github.com/lazysnap/lazysnap/index"
	"github.com/lazysnap/lazysnap/internal/testtar"
)

// panicDecoder is the eStargz decoder with a bug: it indexes past the
// chunk's bytes (a runtime panic, as the inflater's slice bounds were)
// for the chunk at blob offset at.
type panicDecoder struct {
	at    atomic.Int64
	calls atomic.Int64
}

func (d *panicDecoder) Decode(dst []byte, c *estargz.Chunk, raw []byte) ([]byte, error) {
	d.calls.Add(1)
	if c.Offset == d.at.Load() {
		_ = decodeBug(raw, len(raw))
	}
	return estargz.DecodeChunk(dst, c, raw)
}

// decodeBug reads raw[i]: out of range for i = len(raw).
func decodeBug(raw []byte, i int) byte { return raw[i] }

// TestPanicContained: a panic while one layer's bytes are decoded (by a
// reader's fetch, the background fetch, read-around) or while one of its
// FUSE requests is served fails that read with EIO, marks the layer bad
// with the panic and where it happened (Bad, OnError), fails every later
// read of the layer with EIO at once, without a fetch, and leaves the
// process and another mounted layer serving.
func TestPanicContained(t *testing.T) {
	tarball := testtar.Synthetic(1 << 20)
	other, _ := layerOf(t, tarball, fetch.Options{NoPrefetch: true, NoBackground: true})
	otherMnt, _ := mount(t, other)
	otherFiles := []string{"usr/bin/tool", "big", "many/file-007", "etc/hostname"}

	chunkAt := func(x *index.Index, name string) int64 {
		ino, ok := x.LookupPath(name)
		if !ok || x.NumChunks(ino) == 0 {
			t.Fatalf("no %s with content in the synthetic layer", name)
		}
		return x.Chunk(ino, 0).Offset
	}
	for i, tc := range []struct {
		name string
		opts fetch.Options
		// bug is the file whose first chunk the decoder panics on ("":
		// none); onAccess, the file whose access panics in the read's
		// FUSE request
		bug, onAccess string
		// read is read first: its result is readErr
		read    string
		readErr bool
		frame   string // in the panic's Frame
		value   string // in its Value
	}{
		{name: "reader's fetch", opts: fetch.Options{NoPrefetch: true, NoBackground: true},
			bug: "usr/bin/tool", read: "usr/bin/tool", readErr: true, frame: "decodeBug", value: "index out of range"},
		{name: "read-around of a neighbour", opts: fetch.Options{NoPrefetch: true, NoBackground: true, ReadAround: 1 << 20},
			bug: "many/file-001", read: "many/file-000", frame: "decodeBug", value: "index out of range"},
		{name: "background fetch", opts: fetch.Options{NoPrefetch: true, BackgroundQuiet: -1},
			bug: "big", frame: "decodeBug", value: "index out of range"},
		{name: "FUSE request", opts: fetch.Options{NoPrefetch: true, NoBackground: true},
			onAccess: "etc/hostname", read: "etc/hostname", readErr: true, frame: "TestPanicContained", value: "access bug"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dec := &panicDecoder{}
			dec.at.Store(-1)
			panicked := make(chan error, 1)
			var (
				errs     atomic.Int64
				accessAt atomic.Int64
			)
			accessAt.Store(-1)
			opts := tc.opts
			opts.Name = "layer-" + string(rune('a'+i))
			opts.Decoder = dec
			opts.OnError = func(err error) {
				errs.Add(1)
				if errors.Is(err, fetch.ErrPanic) {
					select {
					case panicked <- err:
					default:
					}
				}
			}
			opts.OnChunkAccess = func(ino index.Ino, chunk int) {
				if int64(ino) == accessAt.Load() {
					panic("access bug")
				}
			}
			l, _, x := layerIndexed(t, tarball, opts, func(b *memBlob) fetch.BlobReader { return b })
			if tc.bug != "" {
				dec.at.Store(chunkAt(x, tc.bug))
			}
			if tc.onAccess != "" {
				ino, _ := x.LookupPath(tc.onAccess)
				accessAt.Store(int64(ino))
			}
			mnt, _ := mount(t, l)
			l.Start()
			if tc.read != "" {
				_, err := os.ReadFile(filepath.Join(mnt, tc.read))
				if tc.readErr && !errors.Is(err, syscall.EIO) {
					t.Fatalf("read of %s: %v, want EIO", tc.read, err)
				}
			}
			var reported error
			select {
			case reported = <-panicked:
			case <-time.After(time.Minute):
				t.Fatalf("no panic reported to OnError; layer errors: %d", errs.Load())
			}
			var pe *fetch.PanicError
			if !errors.As(l.Bad(), &pe) || !errors.Is(l.Bad(), fetch.ErrPanic) {
				t.Fatalf("Bad() = %v, want a PanicError", l.Bad())
			}
			if reported.Error() != pe.Error() || pe.Layer != opts.Name {
				t.Errorf("reported %q of layer %q, Bad says %q", reported, pe.Layer, pe)
			}
			if !strings.HasPrefix(pe.Error(), "panic: ") || !strings.Contains(pe.Value, tc.value) ||
				!strings.Contains(pe.Frame, tc.frame) || !strings.Contains(pe.Frame, "panic_test.go:") ||
				!strings.HasPrefix(pe.Stack, pe.Frame) {
				t.Errorf("panic error %q, frame %q, stack:\n%s\nwant the value %q at %s in panic_test.go", pe, pe.Frame, pe.Stack, tc.value, tc.frame)
			}
			// the fetches in flight when it went bad end (those of a
			// background span may have decoded a chunk more)
			for l.Stats().InFlight > 0 {
				time.Sleep(5 * time.Millisecond)
			}
			// every file of the bad layer is EIO from now on, fetched or
			// not, without a decode
			calls := dec.calls.Load()
			for _, name := range []string{"etc/hostname", "big", "usr/bin/tool", "many/file-000", "many/file-001", "x/with-xattrs"} {
				if _, err := os.ReadFile(filepath.Join(mnt, name)); !errors.Is(err, syscall.EIO) {
					t.Errorf("read of %s after the panic: %v, want EIO", name, err)
				}
			}
			if n := dec.calls.Load() - calls; n != 0 {
				t.Errorf("%d chunks decoded after the layer went bad, want none", n)
			}
			// its metadata still serves
			if _, err := os.Lstat(filepath.Join(mnt, "usr/bin/tool")); err != nil {
				t.Errorf("stat after the panic: %v", err)
			}
			for _, name := range otherFiles {
				got, err := os.ReadFile(filepath.Join(otherMnt, name))
				if err != nil || !bytes.Equal(got, mustRead(t, tarball, name)) {
					t.Fatalf("the other layer's %s after the panic: %v (%d bytes)", name, err, len(got))
				}
			}
			if other.Bad() != nil {
				t.Fatalf("the other layer is bad: %v", other.Bad())
			}
		})
	}
}
