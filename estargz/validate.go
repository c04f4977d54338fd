package estargz

import (
	"fmt"
	"path"
	"sort"
	"strings"
	"time"

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

// tocBuilder validates a decoded TOC and folds it into Entries.
type tocBuilder struct {
	toc     *TOC
	byName  map[string]int
	unames  map[int]string
	gnames  map[int]string
	cur     *Entry // reg entry whose chunks are being collected
	curNext int64  // file offset the next chunk of cur must start at
}

// buildTOC validates j and returns the TOC and the index of every entry
// by name.
func buildTOC(j *jsonTOC, tocOffset int64) (*TOC, map[string]int, error) {
	if j.Version != 1 {
		return nil, nil, fmt.Errorf("%w: TOC version %d, want 1", ErrFormat, j.Version)
	}
	b := &tocBuilder{
		toc:    &TOC{Version: j.Version, Offset: tocOffset, Entries: make([]Entry, 0, len(j.Entries)+1)},
		byName: make(map[string]int, len(j.Entries)+1),
		unames: map[int]string{},
		gnames: map[int]string{},
	}
	b.toc.Entries = append(b.toc.Entries, Entry{Name: "", Type: TypeDir, Mode: 0o755, Implicit: true})
	b.byName[""] = 0
	for i, je := range j.Entries {
		if je == nil {
			return nil, nil, fmt.Errorf("%w: TOC entry %d is null", ErrFormat, i)
		}
		if err := b.add(je, tocOffset); err != nil {
			return nil, nil, fmt.Errorf("TOC entry %d (%q): %w", i, je.Name, err)
		}
	}
	if err := b.finishFile(); err != nil {
		return nil, nil, err
	}
	if err := b.checkChunks(); err != nil {
		return nil, nil, err
	}
	return b.toc, b.byName, nil
}

func (b *tocBuilder) add(je *jsonEntry, tocOffset int64) error {
	if je.Type == TypeChunk {
		return b.addChunk(je, tocOffset)
	}
	if err := b.finishFile(); err != nil {
		return err
	}
	name, err := cleanName(je.Name)
	if err != nil {
		return err
	}
	e := Entry{
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
	b.fillOwnerNames(&e)
	switch je.Type {
	case TypeDir, TypeSymlink, TypeChar, TypeBlock, TypeFifo:
	case TypeHardlink:
		target, err := cleanName(je.LinkName)
		if err != nil {
			return fmt.Errorf("hardlink target: %w", err)
		}
		ti, ok := b.byName[target]
		if !ok || target == name {
			return fmt.Errorf("%w: hardlink to %q, which no earlier entry names", ErrFormat, je.LinkName)
		}
		t := &b.toc.Entries[ti]
		if t.Type == TypeHardlink {
			// a link to a link names the same file; earlier links are
			// already resolved, so one hop reaches it
			target, t = t.LinkName, &b.toc.Entries[b.byName[t.LinkName]]
		}
		if t.Type == TypeDir || target == name {
			return fmt.Errorf("%w: hardlink to %q, a %s", ErrFormat, je.LinkName, t.Type)
		}
		e.LinkName = target
	case TypeReg:
		e.Size = je.Size
	default:
		return fmt.Errorf("%w: unknown entry type %q", ErrFormat, je.Type)
	}
	if name == "" && e.Type != TypeDir {
		return fmt.Errorf("%w: the root is a %s", ErrFormat, e.Type)
	}
	if err := b.addParents(name); err != nil {
		return err
	}
	if i, ok := b.byName[name]; ok {
		if !b.toc.Entries[i].Implicit || e.Type != TypeDir {
			return fmt.Errorf("%w: duplicate entry %q", ErrFormat, name)
		}
		b.toc.Entries[i] = e
		return nil
	}
	b.byName[name] = len(b.toc.Entries)
	b.toc.Entries = append(b.toc.Entries, e)
	if e.Type == TypeReg && e.Size > 0 {
		b.cur = &b.toc.Entries[len(b.toc.Entries)-1]
		b.curNext = 0
		return b.addChunk(je, tocOffset)
	}
	return nil
}

// addParents adds an implicit directory for every missing ancestor of name and
// checks that existing ancestors are directories.
func (b *tocBuilder) addParents(name string) error {
	if name == "" {
		return nil
	}
	dir := path.Dir(name)
	if dir == "." {
		dir = ""
	}
	if i, ok := b.byName[dir]; ok {
		if b.toc.Entries[i].Type != TypeDir {
			return fmt.Errorf("%w: parent %q is a %s", ErrFormat, dir, b.toc.Entries[i].Type)
		}
		return nil
	}
	if err := b.addParents(dir); err != nil {
		return err
	}
	b.byName[dir] = len(b.toc.Entries)
	b.toc.Entries = append(b.toc.Entries, Entry{Name: dir, Type: TypeDir, Mode: 0o755, Implicit: true})
	return nil
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

func (b *tocBuilder) addChunk(je *jsonEntry, tocOffset int64) error {
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
	if je.Offset < 0 || je.Offset >= tocOffset {
		return fmt.Errorf("%w: chunk offset %d (inner %d) outside the blob's data [0, %d)", ErrFormat, je.Offset, je.InnerOffset, tocOffset)
	}
	if !isSHA256(je.ChunkDigest) {
		return fmt.Errorf("%w: chunk digest %q: want a sha256 digest", ErrFormat, je.ChunkDigest)
	}
	f.Chunks = append(f.Chunks, Chunk{Offset: je.Offset, InnerOffset: je.InnerOffset, FileOffset: je.ChunkOffset, Size: size, Digest: digest.Digest(je.ChunkDigest)})
	b.curNext = je.ChunkOffset + size
	return nil
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

func (b *tocBuilder) finishFile() error {
	if b.cur == nil {
		return nil
	}
	f := b.cur
	b.cur = nil
	if b.curNext != f.Size {
		return fmt.Errorf("%w: %q: chunks cover %d of %d bytes", ErrFormat, f.Name, b.curNext, f.Size)
	}
	return nil
}

// checkChunks rejects chunks that overlap and sets every chunk's End.
func (b *tocBuilder) checkChunks() error {
	var all []*Chunk
	for i := range b.toc.Entries {
		e := &b.toc.Entries[i]
		for j := range e.Chunks {
			all = append(all, &e.Chunks[j])
		}
		if e.Name == PrefetchLandmark && len(e.Chunks) > 0 {
			b.toc.PrefetchEnd = e.Chunks[0].Offset
		}
	}
	sort.Slice(all, func(i, j int) bool {
		if all[i].Offset != all[j].Offset {
			return all[i].Offset < all[j].Offset
		}
		return all[i].InnerOffset < all[j].InnerOffset
	})
	for i, c := range all {
		if i+1 < len(all) && all[i+1].Offset == c.Offset && c.InnerOffset+c.Size > all[i+1].InnerOffset {
			return fmt.Errorf("%w: chunks overlap at offset %d (inner %d+%d > %d)", ErrFormat, c.Offset, c.InnerOffset, c.Size, all[i+1].InnerOffset)
		}
	}
	end := b.toc.Offset
	for i := len(all) - 1; i >= 0; i-- {
		// chunks sharing a member share its end; otherwise the next chunk's
		// member is the nearest member boundary known to follow
		if i+1 < len(all) && all[i+1].Offset != all[i].Offset {
			end = all[i+1].Offset
		}
		all[i].End = end
	}
	return nil
}
