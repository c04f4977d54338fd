package fetch

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"

	"github.com/lazysnap/lazysnap/index"
	"github.com/lazysnap/lazysnap/layer"
)

// EntryVerifier is a Decoder of a format whose index says more of a file
// than its chunks vouch for (layer.EntryVerifier: SOCI's). The layer
// calls VerifyEntry before it serves an inode beyond what stat shows:
// before a file is opened, a readlink, a getxattr or
// listxattr, and before a lookup returns a device node; the inode is
// served only if it returns nil. blob reads the layer's compressed ranges
// (it counts them as the layer's requests; it is an Invalidator when the
// layer's BlobReader is one).
//
// An error wrapping context.Canceled or DeadlineExceeded, or a fetch
// error, decides nothing (the next call tries again); any other error is
// the index disagreeing with the layer, and the inode is refused (EIO).
type EntryVerifier = layer.EntryVerifier

// VerifyEntry verifies ino through the Decoder, if it is an
// EntryVerifier, once: a verified inode is remembered, and so is one the
// layer contradicts (refused reports that, for the caller to have the
// kernel drop the attributes it holds of it).
//
// The check runs on the layer's lifetime, not ctx: a request interrupted
// while its check fetches returns (an Interrupted error, EINTR) and leaves
// the check running, and the restarted request, or any other for the
// inode, waits for that one check. A Go process's syscalls are
// interrupted by its runtime's preemption signals every few milliseconds;
// a check cancelled with them was started again by each restart and never
// ended (runc resolving a container's root, for minutes).
func (l *Layer) VerifyEntry(ctx context.Context, ino index.Ino) (refused bool, err error) {
	v, ok := l.opts.Decoder.(EntryVerifier)
	if !ok || bitSet(l.checked, ino) {
		return false, nil
	}
	c := l.entryCheck(v, ino)
	select {
	case <-c.done:
		return c.refused, c.err
	default:
	}
	l.waiting()
	defer l.waited()
	l.preempt(ino)
	select {
	case <-c.done:
		return c.refused, c.err
	case <-ctx.Done():
		return false, &Interrupted{ctx.Err()}
	}
}

// entryCall is one inode's check, running or done.
type entryCall struct {
	done    chan struct{}
	refused bool
	err     error
}

// entryCheck returns ino's check in flight, or starts it in a goroutine of
// the layer's.
func (l *Layer) entryCheck(v EntryVerifier, ino index.Ino) *entryCall {
	l.mu.Lock()
	if c, ok := l.checking[ino]; ok {
		l.mu.Unlock()
		return c
	}
	c := &entryCall{done: make(chan struct{})}
	if l.checking == nil {
		l.checking = map[index.Ino]*entryCall{}
	}
	l.checking[ino] = c
	l.mu.Unlock()
	finish := func() {
		l.mu.Lock()
		delete(l.checking, ino)
		l.mu.Unlock()
		close(c.done)
	}
	if !l.spawn(func() {
		defer finish()
		defer func() {
			if r := recover(); r != nil {
				c.err = l.poison(r)
			}
		}()
		ctx, cancel := context.WithTimeout(l.ctx, l.opts.FetchTimeout)
		defer cancel()
		c.refused, c.err = l.runEntryCheck(ctx, v, ino)
	}) {
		c.err = l.fail(&BlobError{fmt.Errorf("fetch: layer %s: inode %d: %w", l.opts.Name, ino, ErrClosed)})
		finish()
	}
	return c
}

// runEntryCheck is one check of ino, remembered as checked or refused
// unless it decided nothing (a fetch failed, or the layer closed).
func (l *Layer) runEntryCheck(ctx context.Context, v EntryVerifier, ino index.Ino) (refused bool, err error) {
	if err := v.VerifyEntry(ctx, ino, layerBlob{l}); err != nil {
		var fe *BlobError
		refused = !errors.As(err, &fe) && ctx.Err() == nil
		if refused {
			setBit(l.refused, ino)
		}
		return refused, l.fail(fmt.Errorf("fetch: layer %s: inode %d: %w", l.opts.Name, ino, err))
	}
	setBit(l.checked, ino)
	return false, nil
}

// EntryRefused reports whether the layer contradicted what its index says
// of ino: it is served no more, not even its attributes.
func (l *Layer) EntryRefused(ino index.Ino) bool { return bitSet(l.refused, ino) }

// EntryVerified reports whether VerifyEntry has verified ino (what a
// server asks before it gives a device node's attributes unasked).
func (l *Layer) EntryVerified(ino index.Ino) bool { return bitSet(l.checked, ino) }

func bitSet(bits []atomic.Uint64, i index.Ino) bool {
	return int(i/64) < len(bits) && bits[i/64].Load()&(1<<(i%64)) != 0
}

func setBit(bits []atomic.Uint64, i index.Ino) {
	w := &bits[i/64]
	for {
		old := w.Load()
		if w.CompareAndSwap(old, old|1<<(i%64)) {
			return
		}
	}
}

// newInodeBits is a bitmap over the inodes, for a Decoder that is an
// EntryVerifier (nil otherwise: nothing to remember).
func newInodeBits(dec Decoder, inodes int) []atomic.Uint64 {
	if _, ok := dec.(EntryVerifier); !ok {
		return nil
	}
	return make([]atomic.Uint64, (inodes+63)/64)
}

// layerBlob is the layer's BlobReader as an EntryVerifier reads it: its
// requests and bytes are the layer's.
type layerBlob struct{ l *Layer }

func (b layerBlob) ReadRange(ctx context.Context, off, n int64) ([]byte, error) {
	raw, fetched, err := b.l.readFrom(ctx, off, n, true)
	if err == nil && fetched {
		// kept for the read that follows; bytes a read in flight had
		// come with chunks that read stores
		b.l.recent.put(off, raw)
	}
	return raw, err
}

func (b layerBlob) Invalidate(off, n int64) {
	b.l.recent.drop(off, n)
	if inv, ok := b.l.blob.(Invalidator); ok {
		inv.Invalidate(off, n)
	}
}

// recentRaw keeps the compressed ranges entry checks read, until a
// fetch of the chunks over them uses them up (consume) or recentMax bytes
// of later ones push them out: an open checks the span holding the
// file's header, and its first read then fetches that span's chunks,
// which are served from here instead of another request; a check that
// read only the start of a span (a symlink's header, say) leaves that
// start here, and a read of the span, seconds and many other checks
// later, fetches only the rest. (Kept by count, the last four, a symlink's
// prefix was pushed out by the opens after it, and its span fetched
// whole again: 0.9 MB of 24.6 for python3's hello on soci's 4 MiB spans.)
type recentRaw struct {
	mu sync.Mutex
	r  []rawRange // oldest first
	n  int64      // bytes held
}

// recentMax is how many compressed bytes a layer's recentRaw holds at
// most: a few spans at soci's 4 MiB spans (about 1.7 MB compressed each);
// whole spans a check read are used up by the read that follows it, but
// a prediction's ranges, kept for the checks of the files in them, are
// not. (16 MiB fetched the same bytes for python3's imports and added
// 8-15 MiB to the snapshotter's peak RSS; 8 MiB, 0-10 MiB in one run.)
const recentMax = 8 << 20

type rawRange struct {
	off   int64
	b     []byte
	spare bool // putSpare's
}

func (r rawRange) end() int64 { return r.off + int64(len(r.b)) }

// get returns [off, off+n) if a kept range holds it (shared: read only).
func (c *recentRaw) get(off, n int64) []byte {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, r := range c.r {
		if off >= r.off && off+n <= r.end() {
			return r.b[off-r.off : off-r.off+n : off-r.off+n]
		}
	}
	return nil
}

// head returns the start of [off, off+n) that kept ranges hold, joined
// (a copy; nil if none holds off).
func (c *recentRaw) head(off, n int64) []byte {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []byte
	for at := off; at < off+n; {
		i := slices.IndexFunc(c.r, func(r rawRange) bool { return r.off <= at && at < r.end() })
		if i < 0 {
			break
		}
		r := c.r[i]
		part := r.b[at-r.off : min(int64(len(r.b)), off+n-r.off)]
		out = append(out, part...)
		at += int64(len(part))
	}
	return out
}

// put keeps b as the range at off, in place of the kept ranges it holds
// (nothing if a kept range holds it), and drops the oldest beyond
// recentMax bytes: the oldest spare one first.
func (c *recentRaw) put(off int64, b []byte) { c.keep(rawRange{off: off, b: b}) }

// putSpare is put for bytes whose chunks are stored already (a predicted
// multi-range's, kept for the checks of its files' headers that may
// follow): dropped before any that a read may still need (a symlink's
// check's prefix of a span, the span a check read for the open whose read
// follows). (Dropped in put order, the prediction ranges of the loader's
// libraries pushed out libz.so.1's prefix, and python3's imports fetched
// that span whole again for libcrypto: 1.6 MB on soci's index.)
func (c *recentRaw) putSpare(off int64, b []byte) { c.keep(rawRange{off: off, b: b, spare: true}) }

func (c *recentRaw) keep(nr rawRange) {
	c.mu.Lock()
	defer c.mu.Unlock()
	off, b := nr.off, nr.b
	if len(b) == 0 || slices.ContainsFunc(c.r, func(r rawRange) bool { return r.off <= off && nr.end() <= r.end() }) {
		return
	}
	c.remove(func(r rawRange) bool { return off <= r.off && r.end() <= nr.end() })
	c.r = append(c.r, nr)
	c.n += int64(len(b))
	for c.n > recentMax && len(c.r) > 1 {
		i := max(0, slices.IndexFunc(c.r, func(r rawRange) bool { return r.spare }))
		c.n -= int64(len(c.r[i].b))
		c.r = slices.Delete(c.r, i, i+1)
	}
}

// drop forgets the kept ranges that overlap [off, off+n).
func (c *recentRaw) drop(off, n int64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.remove(func(r rawRange) bool { return off < r.end() && r.off < off+n })
}

// consume forgets the kept ranges within [off, off+n), which a fetch of
// the chunks there has used (not those that only overlap it: a span's
// first byte can be the last of the span before).
func (c *recentRaw) consume(off, n int64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.remove(func(r rawRange) bool { return off <= r.off && r.end() <= off+n })
}

// remove forgets the kept ranges gone says; c.mu held.
func (c *recentRaw) remove(gone func(rawRange) bool) {
	c.r = slices.DeleteFunc(c.r, func(r rawRange) bool {
		if gone(r) {
			c.n -= int64(len(r.b))
			return true
		}
		return false
	})
}
