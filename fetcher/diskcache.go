package fetcher

import (
	"container/list"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/opencontainers/go-digest"
)

// On-disk entry format: the chunk bytes followed by a 16-byte trailer:
// magic "LZC1", CRC-32C of the bytes (big endian), length (big endian).
const (
	trailerSize  = 16
	trailerMagic = "LZC1"
	tmpDirName   = "tmp"
	// touchEvery limits how often a hit rewrites an entry's mtime (which
	// carries the LRU order across restarts).
	touchEvery = time.Minute
)

// diskCache is a content-addressed, size-capped LRU chunk cache in a
// directory: <dir>/<alg>/<hex[:2]>/<hex>/<off>-<len>. Entries are written
// to <dir>/tmp and renamed into place. The in-memory index is rebuilt from
// the directory on open (LRU order from mtimes).
type diskCache struct {
	dir string
	max int64

	mu       sync.Mutex
	used     int64
	lru      *list.List // of *diskEntry, front = most recent
	idx      map[chunkKey]*list.Element
	byDigest map[digest.Digest]map[chunkKey]struct{}

	hits, misses, evictions, corrupt int64
}

type diskEntry struct {
	key     chunkKey
	size    int64 // file size, payload + trailer
	touched time.Time
}

func openDiskCache(dir string, max int64) (*diskCache, error) {
	if dir == "" {
		return nil, nil
	}
	if err := os.MkdirAll(filepath.Join(dir, tmpDirName), 0o700); err != nil {
		return nil, fmt.Errorf("fetcher: cache dir: %w", err)
	}
	c := &diskCache{
		dir:      dir,
		max:      max,
		lru:      list.New(),
		idx:      map[chunkKey]*list.Element{},
		byDigest: map[digest.Digest]map[chunkKey]struct{}{},
	}
	if err := c.scan(); err != nil {
		return nil, err
	}
	return c, nil
}

// scan rebuilds the index from the directory, drops leftovers and
// malformed files, and evicts down to the cap.
func (c *diskCache) scan() error {
	tmp := filepath.Join(c.dir, tmpDirName)
	if ents, err := os.ReadDir(tmp); err == nil {
		for _, e := range ents {
			_ = os.Remove(filepath.Join(tmp, e.Name()))
		}
	}
	var found []*diskEntry
	top, err := os.ReadDir(c.dir)
	if err != nil {
		return fmt.Errorf("fetcher: cache dir: %w", err)
	}
	for _, a := range top {
		if !a.IsDir() || a.Name() == tmpDirName {
			continue
		}
		alg := a.Name()
		err := filepath.WalkDir(filepath.Join(c.dir, alg), func(p string, d fs.DirEntry, err error) error {
			if err != nil || d.IsDir() {
				return nil
			}
			key, ok := c.parsePath(alg, p)
			info, ierr := d.Info()
			if !ok || ierr != nil || info.Size() != key.n+trailerSize {
				_ = os.Remove(p)
				return nil
			}
			found = append(found, &diskEntry{key: key, size: info.Size(), touched: info.ModTime()})
			return nil
		})
		if err != nil {
			return fmt.Errorf("fetcher: scan cache: %w", err)
		}
	}
	sort.Slice(found, func(i, j int) bool { return found[i].touched.Before(found[j].touched) })
	c.mu.Lock()
	for _, e := range found {
		c.insertLocked(e)
	}
	victims := c.evictLocked(nil)
	c.mu.Unlock()
	c.removeFiles(victims)
	return nil
}

// parsePath maps <dir>/<alg>/<hex2>/<hex>/<off>-<len> back to its key.
func (c *diskCache) parsePath(alg, p string) (chunkKey, bool) {
	rel, err := filepath.Rel(filepath.Join(c.dir, alg), p)
	if err != nil {
		return chunkKey{}, false
	}
	parts := strings.Split(rel, string(filepath.Separator))
	if len(parts) != 3 || len(parts[1]) < 2 || parts[0] != parts[1][:2] {
		return chunkKey{}, false
	}
	d, err := digest.Parse(alg + ":" + parts[1])
	if err != nil {
		return chunkKey{}, false
	}
	offS, nS, ok := strings.Cut(parts[2], "-")
	if !ok {
		return chunkKey{}, false
	}
	off, err1 := strconv.ParseInt(offS, 10, 64)
	n, err2 := strconv.ParseInt(nS, 10, 64)
	if err1 != nil || err2 != nil || off < 0 || n <= 0 {
		return chunkKey{}, false
	}
	return chunkKey{dgst: d, off: off, n: n}, true
}

func (c *diskCache) path(k chunkKey) string {
	h := k.dgst.Encoded()
	return filepath.Join(c.dir, string(k.dgst.Algorithm()), h[:2], h, fmt.Sprintf("%d-%d", k.off, k.n))
}

// get returns the entry's bytes, or false when absent or damaged (a
// damaged entry is removed so the caller refetches).
func (c *diskCache) get(k chunkKey) ([]byte, bool) {
	if c == nil {
		return nil, false
	}
	c.mu.Lock()
	el, ok := c.idx[k]
	if !ok {
		c.misses++
		c.mu.Unlock()
		return nil, false
	}
	c.lru.MoveToFront(el)
	e := el.Value.(*diskEntry)
	touch := time.Since(e.touched) > touchEvery
	if touch {
		e.touched = time.Now()
	}
	c.mu.Unlock()

	p := c.path(k)
	b, err := os.ReadFile(p)
	if err == nil {
		b, err = decodeEntry(b, k.n)
	}
	if err != nil {
		c.mu.Lock()
		if cur, ok := c.idx[k]; ok && cur == el {
			c.removeLocked(el)
			c.corrupt++
		}
		c.misses++
		c.mu.Unlock()
		_ = os.Remove(p)
		return nil, false
	}
	if touch {
		now := time.Now()
		_ = os.Chtimes(p, now, now)
	}
	c.mu.Lock()
	c.hits++
	c.mu.Unlock()
	return b, true
}

func decodeEntry(b []byte, n int64) ([]byte, error) {
	if int64(len(b)) != n+trailerSize {
		return nil, fmt.Errorf("size %d, want %d", len(b), n+trailerSize)
	}
	data, tr := b[:n], b[n:]
	if string(tr[:4]) != trailerMagic {
		return nil, errors.New("bad magic")
	}
	if binary.BigEndian.Uint64(tr[8:]) != uint64(n) {
		return nil, errors.New("bad length")
	}
	if binary.BigEndian.Uint32(tr[4:8]) != crc32.Checksum(data, crcTable()) {
		return nil, errors.New("bad checksum")
	}
	return data, nil
}

func crcTable() *crc32.Table { return crc32.MakeTable(crc32.Castagnoli) }

// put stores data for k (atomically: temp file, then rename) and evicts
// least recently used entries beyond the cap. Errors are returned but the
// cache stays consistent; callers may ignore them.
func (c *diskCache) put(k chunkKey, data []byte) error {
	if c == nil || int64(len(data)) != k.n {
		return nil
	}
	size := k.n + trailerSize
	if size > c.max {
		return nil
	}
	var tr [trailerSize]byte
	copy(tr[:4], trailerMagic)
	binary.BigEndian.PutUint32(tr[4:8], crc32.Checksum(data, crcTable()))
	binary.BigEndian.PutUint64(tr[8:], uint64(k.n))

	f, err := os.CreateTemp(filepath.Join(c.dir, tmpDirName), "chunk-*")
	if err != nil {
		return fmt.Errorf("fetcher: cache write: %w", err)
	}
	_, err = f.Write(data)
	if err == nil {
		_, err = f.Write(tr[:])
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	p := c.path(k)
	if err == nil {
		err = os.MkdirAll(filepath.Dir(p), 0o700)
	}
	if err == nil {
		err = os.Rename(f.Name(), p)
	}
	if err != nil {
		_ = os.Remove(f.Name())
		return fmt.Errorf("fetcher: cache write: %w", err)
	}
	c.mu.Lock()
	if el, ok := c.idx[k]; ok {
		c.removeLocked(el)
	}
	e := &diskEntry{key: k, size: size, touched: time.Now()}
	c.insertLocked(e)
	victims := c.evictLocked(e)
	c.mu.Unlock()
	c.removeFiles(victims)
	return nil
}

func (c *diskCache) insertLocked(e *diskEntry) {
	c.idx[e.key] = c.lru.PushFront(e)
	m := c.byDigest[e.key.dgst]
	if m == nil {
		m = map[chunkKey]struct{}{}
		c.byDigest[e.key.dgst] = m
	}
	m[e.key] = struct{}{}
	c.used += e.size
}

func (c *diskCache) removeLocked(el *list.Element) {
	e := el.Value.(*diskEntry)
	c.lru.Remove(el)
	delete(c.idx, e.key)
	if m := c.byDigest[e.key.dgst]; m != nil {
		delete(m, e.key)
		if len(m) == 0 {
			delete(c.byDigest, e.key.dgst)
		}
	}
	c.used -= e.size
}

// evictLocked drops LRU entries (never keep) until usage fits the cap and
// returns their keys for file removal outside the lock.
func (c *diskCache) evictLocked(keep *diskEntry) []chunkKey {
	var victims []chunkKey
	for c.used > c.max {
		el := c.lru.Back()
		if el == nil {
			break
		}
		e := el.Value.(*diskEntry)
		if e == keep {
			if el = el.Prev(); el == nil {
				break
			}
			e = el.Value.(*diskEntry)
		}
		c.removeLocked(el)
		c.evictions++
		victims = append(victims, e.key)
	}
	return victims
}

func (c *diskCache) removeFiles(keys []chunkKey) {
	for _, k := range keys {
		p := c.path(k)
		_ = os.Remove(p)
		_ = os.Remove(filepath.Dir(p)) // only succeeds when empty
	}
}

// drop removes every entry of dgst overlapping [off, off+n).
func (c *diskCache) drop(dgst digest.Digest, off, n int64) {
	if c == nil {
		return
	}
	var victims []chunkKey
	c.mu.Lock()
	for k := range c.byDigest[dgst] {
		if k.off < off+n && off < k.end() {
			c.removeLocked(c.idx[k])
			victims = append(victims, k)
		}
	}
	c.mu.Unlock()
	c.removeFiles(victims)
}

// ranges lists the cached ranges of dgst.
func (c *diskCache) ranges(dgst digest.Digest) []chunkKey {
	if c == nil {
		return nil
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make([]chunkKey, 0, len(c.byDigest[dgst]))
	for k := range c.byDigest[dgst] {
		out = append(out, k)
	}
	return out
}

type diskStats struct {
	bytes, entries, hits, misses, evictions, corrupt int64
}

func (c *diskCache) stats() diskStats {
	if c == nil {
		return diskStats{}
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return diskStats{c.used, int64(len(c.idx)), c.hits, c.misses, c.evictions, c.corrupt}
}
