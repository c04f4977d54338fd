package lazy

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"maps"
	"path"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"

	"github.com/lazysnap/lazysnap/layer"
	"github.com/lazysnap/lazysnap/soci"
	"github.com/opencontainers/go-digest"
)

// What a zTOC entry is to the inode it is bound to (entKind).
const (
	kindFile     = iota // the entry the inode's metadata comes from
	kindLink            // a hardlink to the inode
	kindWhiteout        // .wh.NAME: the whiteout inode NAME
	kindOpaque          // .wh..wh..opq: its directory's opaque mark
)

// maxHeaderRegion bounds the bytes between one entry's content and the
// next's: its header blocks, PAX records included (archive/tar reads PAX
// records of at most 1 MiB).
const maxHeaderRegion = 1<<20 + 4<<10

// entryBinding is which inode each zTOC entry describes, and back: what
// VerifyEntry checks for an inode.
type entryBinding struct {
	idx      layer.Index
	entIno   []int32  // per entry: the inode it describes, -1 none (an earlier entry of a name given twice)
	entKind  []uint8  // per entry: kind*
	inoFirst []uint32 // the entries of inode i are inoEnts[inoFirst[i]:inoFirst[i+1]]
	inoEnts  []uint32
}

// bindEntries binds z's entries to idx's inodes (built from z by sociEntries).
func bindEntries(z *soci.Ztoc, idx layer.Index) entryBinding {
	b := entryBinding{idx: idx, entIno: make([]int32, len(z.Files)), entKind: make([]uint8, len(z.Files))}
	seen := make(map[string]bool, len(z.Files))
	counts := make([]uint32, idx.Len()+1)
	for i := len(z.Files) - 1; i >= 0; i-- {
		f := &z.Files[i]
		b.entIno[i] = -1
		name, err := soci.Clean(f.Name)
		if err != nil || seen[name] {
			continue
		}
		seen[name] = true
		kind, target := entryTarget(name, f.Type == layer.TypeHardlink)
		ino, ok := idx.LookupPath(target)
		if !ok {
			continue
		}
		b.entIno[i], b.entKind[i] = int32(ino), uint8(kind)
		counts[ino+1]++
	}
	for i := 1; i < len(counts); i++ {
		counts[i] += counts[i-1]
	}
	b.inoFirst = counts
	b.inoEnts = make([]uint32, counts[len(counts)-1])
	next := append([]uint32(nil), counts[:len(counts)-1]...)
	for i, ino := range b.entIno {
		if ino >= 0 {
			b.inoEnts[next[ino]] = uint32(i)
			next[ino]++
		}
	}
	return b
}

// entryTarget is the kind of entry a clean tar name is, and the path of
// the inode it describes.
func entryTarget(name string, hardlink bool) (kind int, target string) {
	dir, base := path.Split(name)
	switch {
	case base == ".wh..wh..opq":
		return kindOpaque, dir
	case len(base) > 4 && strings.HasPrefix(base, ".wh."):
		return kindWhiteout, dir + base[4:]
	case hardlink:
		return kindLink, name
	}
	return kindFile, name
}

func (b *entryBinding) memoryBytes() int {
	return len(b.entIno)*5 + len(b.inoFirst)*4 + len(b.inoEnts)*4
}

// spanCheck is one span's header check, running or done.
type spanCheck struct {
	done chan struct{}
	err  error
	keep bool // err is the span's verdict, not a failure to fetch it
}

// VerifyEntry implements layer.EntryVerifier: every zTOC entry bound to ino
// is checked against the layer's tar header for it. A span's headers are
// checked together, once: every entry whose header ends in the span is
// parsed from the span's inflated bytes (the span before too, for a
// header that starts there) and compared with what the index serves.
func (d *sociDecoder) VerifyEntry(ctx context.Context, ino layer.Ino, blob layer.BlobReader) error {
	b := &d.bind
	if d.trusted.Load() || b.idx == nil || int(ino) >= len(b.inoFirst)-1 {
		return nil
	}
	for _, e := range b.inoEnts[b.inoFirst[ino]:b.inoFirst[ino+1]] {
		if err := d.checkSpan(ctx, d.z.SpanAt(d.heads[e].off-1), blob); err != nil {
			return err
		}
	}
	return nil
}

// Trust ends the entry checks: the complete layer was checked against the
// zTOC (CheckBlob, with the blob digest).
func (d *sociDecoder) Trust() { d.trusted.Store(true) }

// checkSpan checks the headers that end in span k, once.
func (d *sociDecoder) checkSpan(ctx context.Context, k int, blob layer.BlobReader) error {
	for {
		d.vmu.Lock()
		c, ok := d.vspans[k]
		if !ok {
			c = &spanCheck{done: make(chan struct{})}
			d.vspans[k] = c
			d.vmu.Unlock()
			c.err, c.keep = d.runSpanCheck(ctx, k, blob)
			if !c.keep {
				d.vmu.Lock()
				delete(d.vspans, k)
				d.vmu.Unlock()
			}
			close(c.done)
			return c.err
		}
		d.vmu.Unlock()
		select {
		case <-c.done:
		case <-ctx.Done():
			return ctx.Err()
		}
		if c.keep {
			return c.err
		}
		// the other caller could not fetch it: try here
	}
}

// runSpanCheck returns span k's verdict (keep) or why it could not be
// reached.
func (d *sociDecoder) runSpanCheck(ctx context.Context, k int, blob layer.BlobReader) (err error, keep bool) {
	os, oe := d.z.SpanOut(k)
	first, last := d.headsEndingIn(os, oe)
	if first >= last {
		return nil, true
	}
	lo := d.headerStart(first)
	if err := d.checkRegionSizes(first, last); err != nil {
		return err, true
	}
	var data []byte
	base := int64(-1)
	for j := d.z.SpanAt(lo); j <= k; j++ {
		b, err := d.spanBytes(ctx, j, blob)
		if err != nil {
			return err, errors.Is(err, layer.ErrMismatch)
		}
		if base < 0 {
			base, _ = d.z.SpanOut(j)
		}
		if j == k && data == nil {
			data = b // the common case: no copy
			continue
		}
		data = append(data, b...)
	}
	return d.checkRegions(k, first, last, data, base), true
}

// checkRegionSizes refuses entries first to last whose header blocks
// would be too many to be one entry's, before anything is fetched.
func (d *sociDecoder) checkRegionSizes(first, last int) error {
	for i := first; i < last; i++ {
		if n := d.heads[i].off - d.headerStart(i); n > maxHeaderRegion {
			return fmt.Errorf("%w: entry at %d: %d bytes of headers before it (at most %d): the layer has entries there that the zTOC does not list", layer.ErrMismatch, d.heads[i].off, n, maxHeaderRegion)
		}
	}
	return nil
}

// checkRegions checks the headers of entries first to last, whose bytes
// data holds from tar offset base on: span k's verdict.
func (d *sociDecoder) checkRegions(k, first, last int, data []byte, base int64) error {
	for i := first; i < last; i++ {
		region := data[d.headerStart(i)-base : d.heads[i].off-base]
		if err := d.checkRegion(i, region); err != nil {
			return fmt.Errorf("%w: span %d: %w", layer.ErrMismatch, k, err)
		}
	}
	return nil
}

// precheck gives span k its verdict from its inflated bytes when the
// headers that end in it lie wholly in it (most spans), so that a span
// inflated to be read is not fetched and inflated again when a file whose
// header it holds is opened. A few tar headers parsed per span inflated.
func (d *sociDecoder) precheck(k int, data []byte) {
	if d.bind.idx == nil || d.trusted.Load() {
		return
	}
	d.vmu.Lock()
	_, done := d.vspans[k]
	d.vmu.Unlock()
	if done {
		return // checked, or being checked
	}
	os, oe := d.z.SpanOut(k)
	first, last := d.headsEndingIn(os, oe)
	if first >= last || d.headerStart(first) < os || int64(len(data)) != oe-os {
		return
	}
	err := d.checkRegionSizes(first, last)
	if err == nil {
		err = d.checkRegions(k, first, last, data, os)
	}
	c := &spanCheck{done: make(chan struct{}), err: err, keep: true}
	close(c.done)
	d.vmu.Lock()
	if _, ok := d.vspans[k]; !ok {
		d.vspans[k] = c
	}
	d.vmu.Unlock()
}

// headsEndingIn returns the entries whose header ends in (os, oe]: the
// last byte of the header is in the span [os, oe).
func (d *sociDecoder) headsEndingIn(os, oe int64) (first, last int) {
	search := func(off int64) int {
		lo, hi := 0, len(d.heads)
		for lo < hi {
			m := (lo + hi) / 2
			if d.heads[m].off <= off {
				lo = m + 1
			} else {
				hi = m
			}
		}
		return lo
	}
	return search(os), search(oe)
}

// headerStart is where entry i's header blocks begin: after the previous
// entry's content, padded to a block.
func (d *sociDecoder) headerStart(i int) int64 {
	if i == 0 {
		return 0
	}
	return (d.heads[i-1].end + 511) &^ 511
}

// spanBytes returns span j inflated, from the cache or fetched through
// blob (the cached range dropped and fetched again once if it fails its
// digest: that decides nothing). An error wrapping layer.ErrMismatch is
// the zTOC's (inflate's).
func (d *sociDecoder) spanBytes(ctx context.Context, j int, blob layer.BlobReader) ([]byte, error) {
	if b := d.cachedSpan(j); b != nil {
		return b, nil
	}
	s, e := d.z.SpanRange(j)
	for try := 0; ; try++ {
		raw, err := blob.ReadRange(ctx, s, e-s)
		if err != nil {
			return nil, err
		}
		sum := sha256.Sum256(raw)
		got := digest.NewDigestFromBytes(digest.SHA256, sum[:])
		if got == d.z.SpanDigests[j] {
			return d.span(j, raw)
		}
		inv, ok := blob.(layer.Invalidator)
		if !ok || try > 0 {
			return nil, fmt.Errorf("%w: span %d (%d+%d): digest %s, the zTOC says %s", soci.ErrVerify, j, s, e-s, got, d.z.SpanDigests[j])
		}
		inv.Invalidate(s, e-s)
	}
}

// cachedSpan returns span j's inflated bytes if the decoder holds them.
func (d *sociDecoder) cachedSpan(j int) []byte {
	d.mu.Lock()
	var c *spanData
	for _, s := range d.spans {
		if s.i == j {
			c = s
		}
	}
	d.mu.Unlock()
	if c == nil {
		return nil
	}
	<-c.done
	if c.err != nil {
		return nil
	}
	return c.data
}

// checkRegion parses entry i's header blocks, which must be exactly one
// entry's (PAX and GNU long-name records included), and compares it with
// what the index serves.
func (d *sociDecoder) checkRegion(i int, region []byte) error {
	cr := &countingReader{r: bytes.NewReader(region)}
	h, err := tar.NewReader(cr).Next()
	if err != nil {
		return fmt.Errorf("no tar header before the content at %d: %v", d.heads[i].off, err)
	}
	if cr.n != int64(len(region)) {
		return fmt.Errorf("the layer has an entry %q at %d that the zTOC does not list", h.Name, d.headerStart(i)+cr.n)
	}
	return d.compareEntry(i, h)
}

// compareEntry compares entry i of the zTOC, and the inode it is bound to
// as the index serves it, with the layer's tar header h for it.
func (d *sociDecoder) compareEntry(i int, h *tar.Header) error {
	e := d.heads[i]
	if err := e.matches(h, e.off); err != nil {
		return err
	}
	b := &d.bind
	if b.idx == nil || b.entIno[i] < 0 {
		return nil
	}
	ino := layer.Ino(b.entIno[i])
	name, err := soci.Clean(h.Name)
	if err != nil {
		return fmt.Errorf("the layer's entry at %d: %w", e.off, err)
	}
	kind, target := entryTarget(name, h.Typeflag == tar.TypeLink)
	if got, ok := b.idx.LookupPath(target); kind != int(b.entKind[i]) || !ok || got != ino {
		return fmt.Errorf("the layer's entry at %d is %q (a %s), which the zTOC puts elsewhere", e.off, h.Name, kindName(kind))
	}
	switch kind {
	case kindOpaque, kindWhiteout:
		return nil // the name is all the index takes from them
	case kindLink:
		link, err := soci.Clean(h.Linkname)
		if got, ok := b.idx.LookupPath(link); err != nil || !ok || got != ino {
			return fmt.Errorf("%q is a hardlink to %q, the zTOC links it elsewhere", h.Name, h.Linkname)
		}
		return nil
	}
	return compareAttr(b.idx, ino, h)
}

func kindName(kind int) string {
	return [...]string{"file", "hardlink", "whiteout", "opaque mark"}[kind]
}

// compareAttr compares what the index serves of ino with tar header h:
// type, permission bits, owners, modification time, size, device
// numbers, symlink target and xattrs.
func compareAttr(idx layer.Index, ino layer.Ino, h *tar.Header) error {
	a := idx.Attr(ino)
	typ := map[byte]uint32{tar.TypeReg: syscall.S_IFREG, tar.TypeRegA: syscall.S_IFREG, tar.TypeCont: syscall.S_IFREG,
		tar.TypeDir: syscall.S_IFDIR, tar.TypeSymlink: syscall.S_IFLNK, tar.TypeChar: syscall.S_IFCHR,
		tar.TypeBlock: syscall.S_IFBLK, tar.TypeFifo: syscall.S_IFIFO}[h.Typeflag]
	mtime := int64(0)
	if !h.ModTime.IsZero() {
		mtime = h.ModTime.Unix()
	}
	name := h.Name
	switch {
	case a.Mode&syscall.S_IFMT != typ:
		return fmt.Errorf("%q: type %q in the layer, the zTOC serves mode %o", name, h.Typeflag, a.Mode)
	case a.Mode&0o7777 != uint32(h.Mode&0o7777):
		return fmt.Errorf("%q: mode %o in the layer, the zTOC says %o", name, h.Mode&0o7777, a.Mode&0o7777)
	case int64(a.UID) != int64(h.Uid) || int64(a.GID) != int64(h.Gid):
		return fmt.Errorf("%q: owner %d:%d in the layer, the zTOC says %d:%d", name, h.Uid, h.Gid, a.UID, a.GID)
	case a.Mtime != mtime:
		return fmt.Errorf("%q: modified at %d in the layer, the zTOC says %d", name, mtime, a.Mtime)
	case typ == syscall.S_IFREG && a.Size != h.Size:
		return fmt.Errorf("%q: %d bytes in the layer, the zTOC says %d", name, h.Size, a.Size)
	case (typ == syscall.S_IFCHR || typ == syscall.S_IFBLK) && a.Rdev != linuxDev(h.Devmajor, h.Devminor):
		return fmt.Errorf("%q: device %d:%d in the layer, the zTOC says another (%#x)", name, h.Devmajor, h.Devminor, a.Rdev)
	}
	if typ == syscall.S_IFLNK {
		if target, _ := idx.Readlink(ino); target != h.Linkname {
			return fmt.Errorf("%q: a symlink to %q in the layer, the zTOC says %q", name, h.Linkname, target)
		}
	}
	want := map[string][]byte{}
	for k, v := range h.PAXRecords {
		if x, ok := strings.CutPrefix(k, "SCHILY.xattr."); ok {
			want[x] = []byte(v)
		}
	}
	got := idx.Xattrs(ino)
	if len(got) != len(want) || !maps.EqualFunc(got, want, bytes.Equal) {
		return fmt.Errorf("%q: xattrs %s in the layer, the zTOC says %s", name, xattrNames(want), xattrNames(got))
	}
	return nil
}

func xattrNames(m map[string][]byte) string {
	var b strings.Builder
	b.WriteByte('[')
	for k, v := range m {
		if b.Len() > 1 {
			b.WriteByte(' ')
		}
		fmt.Fprintf(&b, "%s=%q", k, v)
	}
	b.WriteByte(']')
	return b.String()
}

// linuxDev is Linux's new_encode_dev, as the index encodes devices.
func linuxDev(major, minor int64) uint32 {
	return uint32(minor&0xff) | uint32(major&0xfff)<<8 | uint32(minor&^0xff)<<12
}

// entryState is the decoder's state for VerifyEntry.
type entryState struct {
	bind    entryBinding
	vmu     sync.Mutex
	vspans  map[int]*spanCheck
	trusted atomic.Bool
}
