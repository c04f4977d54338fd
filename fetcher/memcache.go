package fetcher

import (
	"container/list"
	"sync"

	"github.com/opencontainers/go-digest"
)

// chunkKey names a cached range of a blob.
type chunkKey struct {
	dgst digest.Digest
	off  int64
	n    int64
}

func (k chunkKey) end() int64 { return k.off + k.n }

// memCache is a byte-capped LRU of small chunks. Get and Put copy, so
// callers own what they pass and receive.
type memCache struct {
	max, maxItem int64

	mu   sync.Mutex
	used int64
	lru  *list.List // of *memEntry, front = most recent
	idx  map[chunkKey]*list.Element
	hits int64
}

type memEntry struct {
	key  chunkKey
	data []byte
}

func newMemCache(max int64) *memCache {
	if max <= 0 {
		return nil
	}
	item := min(max/16, 1<<20)
	return &memCache{max: max, maxItem: item, lru: list.New(), idx: map[chunkKey]*list.Element{}}
}

func (m *memCache) get(k chunkKey) ([]byte, bool) {
	if m == nil {
		return nil, false
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	el, ok := m.idx[k]
	if !ok {
		return nil, false
	}
	m.lru.MoveToFront(el)
	m.hits++
	return append([]byte(nil), el.Value.(*memEntry).data...), true
}

func (m *memCache) put(k chunkKey, data []byte) {
	if m == nil || int64(len(data)) > m.maxItem {
		return
	}
	cp := append([]byte(nil), data...)
	m.mu.Lock()
	defer m.mu.Unlock()
	if el, ok := m.idx[k]; ok {
		e := el.Value.(*memEntry)
		m.used += int64(len(cp)) - int64(len(e.data))
		e.data = cp
		m.lru.MoveToFront(el)
	} else {
		m.idx[k] = m.lru.PushFront(&memEntry{key: k, data: cp})
		m.used += int64(len(cp))
	}
	for m.used > m.max {
		el := m.lru.Back()
		e := el.Value.(*memEntry)
		m.lru.Remove(el)
		delete(m.idx, e.key)
		m.used -= int64(len(e.data))
	}
}

// drop removes every entry of dgst overlapping [off, off+n).
func (m *memCache) drop(dgst digest.Digest, off, n int64) {
	if m == nil {
		return
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	for k, el := range m.idx {
		if k.dgst == dgst && k.off < off+n && off < k.end() {
			m.lru.Remove(el)
			delete(m.idx, k)
			m.used -= int64(len(el.Value.(*memEntry).data))
		}
	}
}

// ranges lists the cached ranges of dgst.
func (m *memCache) ranges(dgst digest.Digest) []chunkKey {
	if m == nil {
		return nil
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []chunkKey
	for k := range m.idx {
		if k.dgst == dgst {
			out = append(out, k)
		}
	}
	return out
}

func (m *memCache) stats() (bytes, entries, hits int64) {
	if m == nil {
		return 0, 0, 0
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.used, int64(len(m.idx)), m.hits
}
