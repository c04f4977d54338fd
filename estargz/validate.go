package estargz

import (
	"fmt"
	"path"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/lazysnap/lazysnap/layer"
	"github.com/opencontainers/go-digest"
)

// MaxChunkSpan caps how far into its gzip member a chunk may end
// (InnerOffset+Size). Decoding a chunk decompresses that much, so the cap
// bounds the memory and time a hostile TOC can make a read cost. The
// reference tools write chunks of at most a few MiB (4 MiB by default).
const MaxChunkSpan = 64 << 20

// maxID is the largest uid or gid a TOC entry may carry: Linux ids are 32
// bits, and a larger one would be truncated (uid 2^32 would read as root).
const maxID = 1<<32 - 1

// cleanName turns a tar or TOC name into the clean relative form used by
// Entry.Name ("" for the root). It rejects absolute names, ".." elements and
// NUL bytes rather than silently rewriting them.
func cleanName(name string) (string, error) {
	if strings.IndexByte(name, 0) >= 0 {
		return "", fmt.Errorf("%w: name %q contains NUL", ErrFormat, name)
	}
	if strings.HasPrefix(name, "/") {
		return "", fmt.Errorf("%w: absolute name %q", ErrFormat, name)
	}
	for _, el := range strings.Split(name, "/") {
		if el == ".." {
			return "", fmt.Errorf("%w: name %q escapes the layer", ErrFormat, name)
		}
	}
	c := path.Clean(name)
	if c == "." {
		return "", nil
	}
	return c, nil
}

// TOCSink receives the entries of a TOC from DecodeTOC as they are
// decoded and validated (layer.Sink). e.Chunks have End 0: ChunkEnd gives
// them once the whole TOC has been read.
type TOCSink = layer.Sink

// TOCReserver may be implemented by a TOCSink that would rather size its
// arrays once than grow them (layer.Reserver): DecodeTOC calls Reserve at
// most once, early in a large TOC (at least reserveMinTOC bytes of JSON),
// with estimates of how many IDs and chunks the whole TOC gives,
// extrapolated from the first 1/reserveSample of its bytes and capped by
// the entry cap.
type TOCReserver = layer.Reserver

// reserveMinTOC is the smallest TOC JSON whose decoding reserves its
// arrays: 4 MiB, about 12 000 entries at the ~330 bytes per entry the
// reference writer's indented JSON takes; below it, growing the arrays
// costs little.
const reserveMinTOC = 4 << 20

// reserveSample: the reservation extrapolates from the first
// 1/reserveSample of the TOC JSON (at least 64 KiB when it is made).
const reserveSample = 64

// reserveMargin is the per-mille added to the estimates, so that a TOC a
// little denser than its start does not grow every array at its end.
const reserveMargin = 20

// tocBuilder validates a TOC entry by entry and hands the validated
// entries to a TOCSink. It keeps a compact name table (nameTable) and
// 16 bytes per chunk, not the entries.
type tocBuilder struct {
	sink      TOCSink
	tocOffset int64
	names     *nameTable
	unames    map[int]string
	gnames    map[int]string

	e       Entry  // the entry being built
	cur     *Entry // &file while a reg entry collects its chunks
	curID   uint32
	curBase string
	curNext int64 // file offset the next chunk of cur must start at
	file    Entry

	// every chunk's place, in the order given, for the overlap check and
	// End; sorted while each chunk starts at or after the one before
	chunkOff   []int64
	chunkInner []uint32
	chunkSize  []uint32
	sorted     bool

	prefetchEnd int64
}

func newTOCBuilder(sink TOCSink, tocOffset int64) *tocBuilder {
	return &tocBuilder{sink: sink, tocOffset: tocOffset, names: newNameTable(), unames: map[int]string{}, gnames: map[int]string{}, sorted: true}
}

// reserve sizes the name table, chunk places and sink (if a TOCReserver)
// for a TOC of size bytes of JSON, off of which have given the entries so
// far, at most maxEntries of them.
func (b *tocBuilder) reserve(off, size int64, maxEntries int) {
	est := func(n int, limit int64) int {
		e := float64(n) * float64(size) / float64(off) * (1000 + reserveMargin) / 1000
		return int(min(e, float64(limit))) + 64
	}
	ids, chunks := est(b.names.len(), int64(maxEntries)), est(len(b.chunkOff), int64(maxEntries))
	b.names.reserve(ids, est(len(b.names.names), size)) // names are part of the JSON
	b.chunkOff = slices.Grow(b.chunkOff, chunks-len(b.chunkOff))
	b.chunkInner = slices.Grow(b.chunkInner, chunks-len(b.chunkInner))
	b.chunkSize = slices.Grow(b.chunkSize, chunks-len(b.chunkSize))
	if r, ok := b.sink.(TOCReserver); ok {
		r.Reserve(ids, chunks)
	}
}

// start gives the sink the root.
func (b *tocBuilder) start() error {
	return b.sink.Entry(0, -1, -1, "", &Entry{Name: "", Type: layer.TypeDir, Mode: 0o755, Implicit: true})
}

// finish checks the chunks once every entry has been added and gives the
// sink their ends.
func (b *tocBuilder) finish() error {
	if err := b.finishFile(); err != nil {
		return err
	}
	return b.checkChunks()
}

func (b *tocBuilder) add(je *jsonEntry) error {
	if je.Type == TypeChunk {
		return b.addChunk(je)
	}
	if err := b.finishFile(); err != nil {
		return err
	}
	name, err := cleanName(je.Name)
	if err != nil {
		return err
	}
	e := &b.e
	*e = Entry{
		Name: name, Type: je.Type, LinkName: je.LinkName, Mode: je.Mode & 0o7777,
		UID: je.UID, GID: je.GID, Uname: je.Uname, Gname: je.Gname,
		DevMajor: je.DevMajor, DevMinor: je.DevMinor, Xattrs: je.Xattrs, Digest: je.Digest,
	}
	if je.Mode < 0 || je.UID < 0 || je.GID < 0 || je.DevMajor < 0 || je.DevMinor < 0 || je.Size < 0 {
		return fmt.Errorf("%w: negative mode, owner, device or size", ErrFormat)
	}
	if je.UID > maxID || je.GID > maxID {
		return fmt.Errorf("%w: uid %d or gid %d above %d", ErrFormat, je.UID, je.GID, maxID)
	}
	if je.ModTime3339 != "" {
		if e.ModTime, err = time.Parse(time.RFC3339, je.ModTime3339); err != nil {
			return fmt.Errorf("%w: modtime: %v", ErrFormat, err)
		}
	}
	b.fillOwnerNames(e)
	link := -1
	switch je.Type {
	case layer.TypeDir, layer.TypeSymlink, layer.TypeChar, layer.TypeBlock, layer.TypeFifo:
	case layer.TypeHardlink:
		target, err := cleanName(je.LinkName)
		if err != nil {
			return fmt.Errorf("hardlink target: %w", err)
		}
		ti, ok := b.names.find(target)
		if !ok || target == name {
			return fmt.Errorf("%w: hardlink to %q, which no earlier entry names", ErrFormat, je.LinkName)
		}
		if b.names.kind[ti] == kindHardlink {
			// a link to a link names the same file; earlier links are
			// already resolved, so one hop reaches it
			ti = b.names.links[ti]
			target = b.names.fullName(ti)
		}
		if k := b.names.kind[ti]; k&^kindImplicit == kindDir || target == name {
			return fmt.Errorf("%w: hardlink to %q, a %s", ErrFormat, je.LinkName, kindName(k))
		}
		e.LinkName, link = target, int(ti)
	case layer.TypeReg:
		e.Size = je.Size
	default:
		return fmt.Errorf("%w: unknown entry type %q", ErrFormat, je.Type)
	}
	if name == "" {
		if e.Type != layer.TypeDir {
			return fmt.Errorf("%w: the root is a %s", ErrFormat, e.Type)
		}
		return b.replaceImplicit(0, -1, "", e)
	}
	dir, base := "", name
	if i := strings.LastIndexByte(name, '/'); i >= 0 {
		dir, base = name[:i], name[i+1:]
	}
	parent, err := b.addParents(dir)
	if err != nil {
		return err
	}
	if id, ok := b.names.lookup(parent, base); ok {
		return b.replaceImplicit(id, int(parent), base, e)
	}
	id, err := b.names.add(parent, base, kindOf(e.Type))
	if err != nil {
		return err
	}
	if link >= 0 {
		b.names.links[id] = uint32(link)
	}
	if e.Type == layer.TypeReg && e.Size > 0 {
		b.file, b.cur = *e, &b.file
		b.file.Chunks = b.file.Chunks[:0]
		b.curID, b.curBase, b.curNext = id, base, 0
		return b.addChunk(je)
	}
	return b.sink.Entry(int(id), int(parent), link, base, e)
}

// replaceImplicit gives the sink e, a directory the TOC lists after
// entries inside it; any other entry of a name already given is a
// duplicate.
func (b *tocBuilder) replaceImplicit(id uint32, parent int, base string, e *Entry) error {
	if b.names.kind[id] != kindDir|kindImplicit || e.Type != layer.TypeDir {
		return fmt.Errorf("%w: duplicate entry %q", ErrFormat, e.Name)
	}
	b.names.kind[id] = kindDir
	return b.sink.Entry(int(id), parent, -1, base, e)
}

// addParents returns the ID of directory dir, adding an implicit directory
// for it and every missing ancestor, and checks that existing ancestors
// are directories.
func (b *tocBuilder) addParents(dir string) (uint32, error) {
	t := b.names
	if dir == t.lastDir {
		return t.lastID, nil
	}
	id := uint32(0)
	for i := 0; i < len(dir); {
		j := strings.IndexByte(dir[i:], '/')
		if j < 0 {
			j = len(dir)
		} else {
			j += i
		}
		el := dir[i:j]
		next, ok := t.lookup(id, el)
		switch {
		case !ok:
			var err error
			if next, err = t.add(id, el, kindDir|kindImplicit); err != nil {
				return 0, err
			}
			if err := b.sink.Entry(int(next), int(id), -1, el, &Entry{Name: dir[:j], Type: layer.TypeDir, Mode: 0o755, Implicit: true}); err != nil {
				return 0, err
			}
		case t.kind[next]&^kindImplicit != kindDir:
			return 0, fmt.Errorf("%w: parent %q is a %s", ErrFormat, dir[:j], kindName(t.kind[next]))
		}
		id, i = next, j+1
	}
	t.lastDir, t.lastID = dir, id
	return id, nil
}

// isSHA256 reports whether s is a valid sha256 digest ("sha256:" and 64
// lowercase hex digits), what digest.Parse accepts for sha256, without its
// regular expressions: a TOC has one per chunk.
func isSHA256(s string) bool {
	hex, ok := strings.CutPrefix(s, "sha256:")
	if !ok || len(hex) != 64 {
		return false
	}
	for i := 0; i < len(hex); i++ {
		if c := hex[i]; (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}

func (b *tocBuilder) fillOwnerNames(e *Entry) {
	if e.Uname != "" {
		if _, ok := b.unames[e.UID]; !ok {
			b.unames[e.UID] = e.Uname
		}
	} else {
		e.Uname = b.unames[e.UID]
	}
	if e.Gname != "" {
		if _, ok := b.gnames[e.GID]; !ok {
			b.gnames[e.GID] = e.Gname
		}
	} else {
		e.Gname = b.gnames[e.GID]
	}
}

func (b *tocBuilder) addChunk(je *jsonEntry) error {
	f := b.cur
	if f == nil {
		return fmt.Errorf("%w: chunk with no regular file before it", ErrFormat)
	}
	if je.Type == TypeChunk && je.Name != "" {
		if n, err := cleanName(je.Name); err != nil || n != f.Name {
			return fmt.Errorf("%w: chunk of %q follows %q", ErrFormat, je.Name, f.Name)
		}
	}
	if je.ChunkOffset != b.curNext {
		return fmt.Errorf("%w: chunk at file offset %d, want %d", ErrFormat, je.ChunkOffset, b.curNext)
	}
	size := je.ChunkSize
	if size == 0 {
		size = f.Size - je.ChunkOffset
	}
	if size <= 0 || size > f.Size-je.ChunkOffset {
		return fmt.Errorf("%w: chunk size %d at file offset %d of a %d-byte file", ErrFormat, je.ChunkSize, je.ChunkOffset, f.Size)
	}
	if je.InnerOffset < 0 || je.InnerOffset > MaxChunkSpan-size {
		return fmt.Errorf("%w: chunk spans %d+%d uncompressed bytes of its member, cap %d", ErrTooLarge, je.InnerOffset, size, int64(MaxChunkSpan))
	}
	if je.Offset < 0 || je.Offset >= b.tocOffset {
		return fmt.Errorf("%w: chunk offset %d (inner %d) outside the blob's data [0, %d)", ErrFormat, je.Offset, je.InnerOffset, b.tocOffset)
	}
	cd := je.ChunkDigest
	if cd == "" && je.Type == layer.TypeReg && size == f.Size {
		cd = je.Digest // a file in one chunk: its digest is the chunk's (zstd:chunked)
	}
	if !isSHA256(cd) {
		return fmt.Errorf("%w: chunk digest %q: want a sha256 digest", ErrFormat, cd)
	}
	f.Chunks = append(f.Chunks, Chunk{Offset: je.Offset, InnerOffset: je.InnerOffset, FileOffset: je.ChunkOffset, Size: size, Digest: digest.Digest(cd)})
	b.curNext = je.ChunkOffset + size
	if n := len(b.chunkOff); n > 0 && (je.Offset < b.chunkOff[n-1] || je.Offset == b.chunkOff[n-1] && uint32(je.InnerOffset) < b.chunkInner[n-1]) {
		b.sorted = false
	}
	// InnerOffset+size <= MaxChunkSpan: both fit 32 bits
	b.chunkOff = append(b.chunkOff, je.Offset)
	b.chunkInner = append(b.chunkInner, uint32(je.InnerOffset))
	b.chunkSize = append(b.chunkSize, uint32(size))
	return nil
}

// finishFile checks that the chunks of the reg entry being built cover it
// and gives it to the sink.
func (b *tocBuilder) finishFile() error {
	if b.cur == nil {
		return nil
	}
	f := b.cur
	b.cur = nil
	if b.curNext != f.Size {
		return fmt.Errorf("%w: %q: chunks cover %d of %d bytes", ErrFormat, f.Name, b.curNext, f.Size)
	}
	if f.Name == PrefetchLandmark {
		b.prefetchEnd = f.Chunks[0].Offset
	}
	return b.sink.Entry(int(b.curID), int(b.names.parent[b.curID]), -1, b.curBase, f)
}

// checkChunks rejects chunks that overlap and gives the sink every chunk's
// End.
func (b *tocBuilder) checkChunks() error {
	n := len(b.chunkOff)
	order := func(i int) int { return i }
	if !b.sorted {
		perm := make([]uint32, n)
		for i := range perm {
			perm[i] = uint32(i)
		}
		sort.Slice(perm, func(i, j int) bool {
			a, c := perm[i], perm[j]
			if b.chunkOff[a] != b.chunkOff[c] {
				return b.chunkOff[a] < b.chunkOff[c]
			}
			return b.chunkInner[a] < b.chunkInner[c]
		})
		order = func(i int) int { return int(perm[i]) }
	}
	for k := 0; k+1 < n; k++ {
		c, next := order(k), order(k+1)
		if b.chunkOff[next] == b.chunkOff[c] && int64(b.chunkInner[c])+int64(b.chunkSize[c]) > int64(b.chunkInner[next]) {
			return fmt.Errorf("%w: chunks overlap at offset %d (inner %d+%d > %d)", ErrFormat, b.chunkOff[c], b.chunkInner[c], b.chunkSize[c], b.chunkInner[next])
		}
	}
	// chunks sharing a member share its end; otherwise the next chunk's
	// member is the nearest member boundary known to follow
	ends := func(emit func(i int, end int64)) {
		end := b.tocOffset
		for k := n - 1; k >= 0; k-- {
			if k+1 < n && b.chunkOff[order(k+1)] != b.chunkOff[order(k)] {
				end = b.chunkOff[order(k+1)]
			}
			emit(order(k), end)
		}
	}
	if b.sorted {
		// in order: each run of chunks of one member ends where the next
		// run starts
		for k := 0; k < n; {
			j := k + 1
			for j < n && b.chunkOff[j] == b.chunkOff[k] {
				j++
			}
			end := b.tocOffset
			if j < n {
				end = b.chunkOff[j]
			}
			for ; k < j; k++ {
				b.sink.ChunkEnd(k, end)
			}
		}
		return nil
	}
	byOrdinal := make([]int64, n)
	ends(func(i int, end int64) { byOrdinal[i] = end })
	for i, end := range byOrdinal {
		b.sink.ChunkEnd(i, end)
	}
	return nil
}
