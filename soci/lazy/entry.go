package lazy

import (
	"archive/tar"
	"bytes"
	"context"
	"fmt"
	"maps"
	"path"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"

	"github.com/lazysnap/lazysnap/layer"
	"github.com/lazysnap/lazysnap/soci"
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

// spanCheck is the header checks of the entries whose header ends in one
// span: they are checked in tar order, as far as an entry asked about
// needs, by one caller at a time.
type spanCheck struct {
	lock chan struct{} // held by the caller checking (1-buffered)
	next int           // the span's entries before next are verified
	err  error         // the verdict of the entries from next on, if any: sticky
}

// VerifyEntry implements layer.EntryVerifier: every zTOC entry bound to ino
// is checked against the layer's tar header for it, and so is every entry
// whose header lies between it and the last checked in its span (a
// span's entries are checked in tar order, each once).
//
// The header is read from the layer's bytes inflated from the span's
// checkpoint as far as the header ends, from as few of the span's
// compressed bytes as that takes, unless the entry is a file whose
// content starts in the same span (whose first read needs the whole span
// anyway). Those bytes cannot be checked against the span digest, which
// covers the whole span; the check does not need it. Its verdict only
// decides whether the zTOC's word is served: bytes the registry got wrong
// make a match no likelier (the zTOC's word is served, as with the right
// bytes) and a mismatch is tried again on the whole span, verified
// against its digest, before it is the verdict. A zTOC that lies has its
// span digests lie with it, so they vouch for nothing against it: what
// does is the layer's own bytes, which only the layer digest confirms,
// when the layer is complete (CheckBlob).
func (d *sociDecoder) VerifyEntry(ctx context.Context, ino layer.Ino, blob layer.BlobReader) error {
	b := &d.bind
	if d.trusted.Load() || b.idx == nil || int(ino) >= len(b.inoFirst)-1 {
		return nil
	}
	for _, e := range b.inoEnts[b.inoFirst[ino]:b.inoFirst[ino+1]] {
		if err := d.checkUpTo(ctx, int(e), blob); err != nil {
			return err
		}
	}
	return nil
}

// Trust ends the entry checks: the complete layer was checked against the
// zTOC (CheckBlob, with the blob digest).
func (d *sociDecoder) Trust() { d.trusted.Store(true) }

// spanState returns span k's checks, made on first use.
func (d *sociDecoder) spanState(k int) *spanCheck {
	d.vmu.Lock()
	defer d.vmu.Unlock()
	c, ok := d.vspans[k]
	if !ok {
		os, _ := d.z.SpanOut(k)
		first, _ := d.headsEndingIn(os, os)
		c = &spanCheck{lock: make(chan struct{}, 1), next: first}
		d.vspans[k] = c
	}
	return c
}

// checkUpTo checks entry e's header, and those before it in its span not
// checked yet. An error wrapping layer.ErrMismatch is the verdict; any
// other decides nothing (the next call tries again).
func (d *sociDecoder) checkUpTo(ctx context.Context, e int, blob layer.BlobReader) error {
	k := d.z.SpanAt(d.heads[e].off - 1)
	c := d.spanState(k)
	select {
	case c.lock <- struct{}{}:
	case <-ctx.Done():
		return ctx.Err()
	}
	defer func() { <-c.lock }()
	if e < c.next {
		return nil
	}
	if c.err != nil {
		return c.err
	}
	first := c.next
	if err := d.checkRegionSizes(first, e+1); err != nil {
		c.err = err
		return err
	}
	// a file whose content starts in this span has it read whole next
	os, oe := d.z.SpanOut(k)
	h := d.heads[e]
	whole := h.typ == '0' && h.end > h.off && h.off < oe
	for {
		data, base, all, err := d.headerBytes(ctx, k, d.headerStart(first), h.off, whole, blob)
		if err != nil {
			return err
		}
		last := e + 1
		if all {
			_, last = d.headsEndingIn(os, oe) // all of the span's: its bytes are here
		}
		i, err := d.checkFrom(first, last, data, base)
		if err != nil && !all {
			whole = true // not the verdict until the span's verified bytes say it
			continue
		}
		c.next = i
		if err != nil {
			c.err = fmt.Errorf("%w: span %d: %w", layer.ErrMismatch, k, err)
			return c.err
		}
		return nil
	}
}

// headerBytes returns the layer's uncompressed bytes from lo to at least
// hi (hi in span k, lo in it or before), starting at tar offset base:
// the spans before k whole, and of span k the whole span (all: verified
// against its digest) if whole or if that is what it takes, else a
// prefix.
func (d *sociDecoder) headerBytes(ctx context.Context, k int, lo, hi int64, whole bool, blob layer.BlobReader) (data []byte, base int64, all bool, err error) {
	j := d.z.SpanAt(lo)
	base, _ = d.z.SpanOut(j)
	for ; j < k; j++ {
		b, err := d.spanBytes(ctx, j, blob)
		if err != nil {
			return nil, 0, false, err
		}
		data = append(data, b...)
	}
	os, _ := d.z.SpanOut(k)
	var b []byte
	if whole {
		b, err = d.spanBytes(ctx, k, blob)
		all = true
	} else {
		b, all, err = d.spanPrefix(ctx, k, hi-os, blob)
	}
	if err != nil {
		return nil, 0, false, err
	}
	if data == nil {
		return b, base, all, nil // the common case: no copy
	}
	return append(data, b...), base, all, nil
}

// checkFrom checks the headers of entries first to last, whose bytes
// data holds from tar offset base on, in order, and returns the first
// entry that did not pass (last if all did) and why.
func (d *sociDecoder) checkFrom(first, last int, data []byte, base int64) (int, error) {
	for i := first; i < last; i++ {
		region := data[d.headerStart(i)-base : d.heads[i].off-base]
		if err := d.checkRegion(i, region); err != nil {
			return i, err
		}
	}
	return last, nil
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

// precheck checks, from span k's verified inflated bytes, the headers
// that end in it and have not been checked, when they lie wholly in it
// (and no caller is checking the span), so that a span inflated to be
// read is not fetched and inflated again when a file whose header it
// holds is opened. A few tar headers parsed per span inflated.
func (d *sociDecoder) precheck(k int, data []byte) {
	if d.bind.idx == nil || d.trusted.Load() {
		return
	}
	os, oe := d.z.SpanOut(k)
	if int64(len(data)) != oe-os {
		return
	}
	c := d.spanState(k)
	select {
	case c.lock <- struct{}{}:
	default:
		return // being checked
	}
	defer func() { <-c.lock }()
	_, last := d.headsEndingIn(os, oe)
	if c.err != nil || c.next >= last || d.headerStart(c.next) < os {
		return
	}
	if err := d.checkRegionSizes(c.next, last); err != nil {
		c.err = err
		return
	}
	i, err := d.checkFrom(c.next, last, data, os)
	c.next = i
	if err != nil {
		c.err = fmt.Errorf("%w: span %d: %w", layer.ErrMismatch, k, err)
	}
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
