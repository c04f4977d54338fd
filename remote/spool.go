package remote

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/lazysnap/lazysnap/index"
	"github.com/lazysnap/lazysnap/snapshotter"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// containerd prepares an image's layers one after another, each Prepare
// waiting for the one below: a Pull of a layer that is not lazy would make
// the next layer's download wait for the whole of this one's. So when a
// Pull starts, the layers its labels list above it that are not lazy
// either are downloaded ahead (spooled), while a slot of the pull budget
// (PullOptions.Concurrency) is free, into files under Root/spool; their
// own Pull then unpacks from the file while it still grows, and removes
// it. The downloads go one after another, in the image's order: a spool
// starts once the download below it (the Pull's own, or the spool below)
// has its last byte, so that the layer containerd waits for has the whole
// link rather than sharing it with the layers above (the walk image's
// python layer took 8.0 s beside its 32 MB neighbour's spool, against
// 5.3 s of link time alone, and the layer above could not be unpacked
// before it was committed). Nothing in a spool is trusted: the Pull that takes it checks the
// bytes against the layer digest as it checks a download. A spool no Pull
// takes within warmTTL of its end (containerd had the snapshot already,
// the pull was given up) is removed.
const spoolDir = "spool"

// spooler holds the spools of one FS.
type spooler struct {
	dir string
	wg  sync.WaitGroup // the downloads

	mu     sync.Mutex
	m      map[digest.Digest]*spool
	closed bool
}

// spool is one blob being downloaded ahead of its Pull, or downloaded.
type spool struct {
	path   string
	size   int64
	cancel context.CancelFunc

	mu      sync.Mutex
	written int64
	done    bool
	err     error
	taken   bool
	more    chan struct{} // closed (and replaced) when written or done change
	// ended is closed when the download ends, whether it failed or not
	ended chan struct{}
}

func newSpooler(root string) *spooler {
	return &spooler{dir: filepath.Join(root, spoolDir), m: map[digest.Digest]*spool{}}
}

// has reports whether dg is spooled or being spooled.
func (s *spooler) has(dg digest.Digest) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	_, ok := s.m[dg]
	return ok
}

// start spools blob dg of size bytes with copyBlob once after is closed
// (at once if it is nil), calling release when the download ends. It
// returns the spool, or nil (and calls release) when dg is spooled already
// or the spooler is closed.
func (s *spooler) start(dg digest.Digest, size int64, copyBlob func(ctx context.Context, w io.Writer) error, release func(), after <-chan struct{}) *spool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.m[dg]; ok || s.closed || dg.Validate() != nil {
		release()
		return nil
	}
	if err := os.MkdirAll(s.dir, 0o700); err != nil {
		release()
		return nil
	}
	if after == nil {
		now := make(chan struct{})
		close(now)
		after = now
	}
	ctx, cancel := context.WithCancel(context.Background())
	sp := &spool{path: filepath.Join(s.dir, dg.Algorithm().String()+"-"+dg.Encoded()), size: size, cancel: cancel,
		more: make(chan struct{}), ended: make(chan struct{})}
	s.m[dg] = sp
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		var err error
		select {
		case <-after:
			err = sp.download(ctx, copyBlob)
		case <-ctx.Done():
			err = ctx.Err()
		}
		release() // the budget is of downloads
		sp.finish(err)
		// not taken in time: dropped
		t := time.NewTimer(warmTTL)
		defer t.Stop()
		select {
		case <-t.C:
		case <-ctx.Done():
		}
		sp.mu.Lock()
		taken := sp.taken
		sp.mu.Unlock()
		if !taken {
			s.drop(dg, sp)
		}
	}()
	return sp
}

func (sp *spool) download(ctx context.Context, copyBlob func(ctx context.Context, w io.Writer) error) error {
	f, err := os.OpenFile(sp.path, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o600)
	if err != nil {
		return err
	}
	err = copyBlob(ctx, spoolWriter{f: f, sp: sp})
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

// spoolWriter writes a spool's file and tells its reader.
type spoolWriter struct {
	f  *os.File
	sp *spool
}

func (w spoolWriter) Write(p []byte) (int, error) {
	n, err := w.f.Write(p)
	w.sp.mu.Lock()
	w.sp.written += int64(n)
	w.sp.signalLocked()
	w.sp.mu.Unlock()
	return n, err
}

func (sp *spool) signalLocked() {
	close(sp.more)
	sp.more = make(chan struct{})
}

func (sp *spool) finish(err error) {
	sp.mu.Lock()
	defer sp.mu.Unlock()
	sp.done, sp.err = true, err
	sp.signalLocked()
	close(sp.ended)
}

// take hands the spool of dg to its Pull (nil if there is none): the Pull
// reads it with copyTo and removes it with done.
func (s *spooler) take(dg digest.Digest) *spool {
	s.mu.Lock()
	defer s.mu.Unlock()
	sp := s.m[dg]
	if sp == nil {
		return nil
	}
	sp.mu.Lock()
	defer sp.mu.Unlock()
	if sp.taken || sp.done && sp.err != nil {
		return nil
	}
	sp.taken = true
	return sp
}

// done removes a taken spool.
func (s *spooler) done(dg digest.Digest, sp *spool) { s.drop(dg, sp) }

// drop ends sp's download and removes its file.
func (s *spooler) drop(dg digest.Digest, sp *spool) {
	sp.cancel()
	s.mu.Lock()
	if s.m[dg] == sp {
		delete(s.m, dg)
	}
	s.mu.Unlock()
	os.Remove(sp.path)
}

// copyTo writes the spooled blob to w while it is downloaded; when the
// download fails, rest fetches what it lacks from the offset reached.
func (sp *spool) copyTo(ctx context.Context, w io.Writer, rest func(ctx context.Context, off int64, w io.Writer) error) error {
	f, err := os.Open(sp.path)
	if err != nil {
		return rest(ctx, 0, w)
	}
	defer f.Close()
	buf := make([]byte, 1<<20)
	var off int64
	for off < sp.size {
		sp.mu.Lock()
		written, done, derr, more := sp.written, sp.done, sp.err, sp.more
		sp.mu.Unlock()
		switch {
		case off < written:
			n, err := f.ReadAt(buf[:min(int64(len(buf)), written-off)], off)
			if n > 0 {
				if _, werr := w.Write(buf[:n]); werr != nil {
					return werr
				}
				off += int64(n)
			}
			if err != nil && !errors.Is(err, io.EOF) {
				return rest(ctx, off, w)
			}
		case done && derr != nil:
			return rest(ctx, off, w)
		case done:
			return fmt.Errorf("spool of %d bytes ended at %d", sp.size, written)
		default:
			select {
			case <-more:
			case <-ctx.Done():
				return ctx.Err()
			}
		}
	}
	return nil
}

// close ends every download and waits for them; their files are removed.
func (s *spooler) close() {
	s.mu.Lock()
	s.closed = true
	sps := make(map[digest.Digest]*spool, len(s.m))
	for d, sp := range s.m {
		sps[d] = sp
	}
	s.mu.Unlock()
	for d, sp := range sps {
		s.drop(d, sp)
	}
	s.wg.Wait()
}

// cleanup removes the files no spool owns (left by a crash).
func (s *spooler) cleanup() error {
	ents, err := os.ReadDir(s.dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	s.mu.Lock()
	owned := map[string]bool{}
	for _, sp := range s.m {
		owned[filepath.Base(sp.path)] = true
	}
	s.mu.Unlock()
	var errs []error
	for _, e := range ents {
		if !owned[e.Name()] && !strings.HasPrefix(e.Name(), ".") {
			if err := os.Remove(filepath.Join(s.dir, e.Name())); err != nil && !errors.Is(err, os.ErrNotExist) {
				errs = append(errs, err)
			}
		}
	}
	return errors.Join(errs...)
}

// pickable reports whether desc is of a lazy format.
func pickable(desc ocispec.Descriptor, maxEntries int, mem *index.Budget) bool {
	_, err := pickFormat(desc, maxEntries, mem)
	return err == nil
}

// spoolAhead starts spooling the layers src lists above its own that are
// not lazy either, while slots of the pull budget are free, one after
// another: the first once below is closed (the end of the download of
// src's own layer), each next one once the one before it has ended.
func (r *FS) spoolAhead(ctx context.Context, bp blobPuller, src snapshotter.LayerSource, below <-chan struct{}) {
	opts := r.opts.Pull
	for _, d := range src.Layers {
		if d == src.Digest || r.spools.has(d) || r.busy(d) {
			continue
		}
		desc, err := r.src.Layer(ctx, src.Ref, d)
		if err != nil {
			return
		}
		if ld, _ := r.localZtoc(desc); pickable(ld, r.opts.MaxEntries, r.opts.IndexMemory) {
			continue // lazy: mounted, not pulled
		}
		select {
		case r.pullSlots <- struct{}{}:
		default:
			return // the budget is taken
		}
		release := func() { <-r.pullSlots }
		desc = withoutOwnAnnotations(desc)
		wb, err := bp.PullBlob(ctx, src.Ref, desc, opts.Connections, opts.PartSize)
		if err != nil {
			release()
			return
		}
		if sp := r.spools.start(d, wb.size, wb.all, release, below); sp != nil {
			below = sp.ended
		}
	}
}
