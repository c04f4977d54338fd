package fetcher

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
)

func readAll(t *testing.T, b *Blob, data []byte, rs []Range) {
	t.Helper()
	got, err := b.ReadRanges(context.Background(), rs)
	if err != nil {
		t.Fatal(err)
	}
	for i, r := range rs {
		if !bytes.Equal(got[i], data[r.Off:r.End()]) {
			t.Fatalf("range %v: wrong bytes", r)
		}
	}
}

func TestCachePersistsAcrossRestart(t *testing.T) {
	data := randBytes(30, 1<<20)
	srv := newFakeRegistry(t, data, nil)
	dir := t.TempDir()
	rs := []Range{{0, 4096}, {100_000, 65536}, {900_000, 10}}

	f1 := newTestFetcher(t, Config{CacheDir: dir})
	readAll(t, mustBlob(t, f1, srv.ref(), srv.desc()), data, rs)
	before := srv.blobRequests()
	_ = f1.Close()

	f2 := newTestFetcher(t, Config{CacheDir: dir})
	u := f2.CacheUsage()
	if u.Entries != int64(len(rs)) {
		t.Fatalf("after restart: %d entries, want %d", u.Entries, len(rs))
	}
	wantBytes := int64(4096+65536+10) + 3*trailerSize
	if u.Bytes != wantBytes {
		t.Fatalf("after restart: %d bytes, want %d", u.Bytes, wantBytes)
	}
	readAll(t, mustBlob(t, f2, srv.ref(), srv.desc()), data, rs)
	if r := srv.blobRequests(); r != before {
		t.Fatalf("restart refetched: %d requests, want %d", r, before)
	}
	if u := f2.CacheUsage(); u.Hits != int64(len(rs)) || u.Misses != 0 {
		t.Fatalf("hits %d misses %d", u.Hits, u.Misses)
	}
}

// TestCacheSharedAcrossReferences: the same layer digest in two
// repositories (two images) is fetched once.
func TestCacheSharedAcrossReferences(t *testing.T) {
	data := randBytes(31, 256<<10)
	srv := newFakeRegistry(t, data, nil)
	f := newTestFetcher(t, Config{CacheDir: t.TempDir(), MemCacheMaxBytes: -1})
	rs := []Range{{0, 1000}, {50_000, 2000}}
	readAll(t, mustBlob(t, f, srv.host()+"/team-a/app:v1", srv.desc()), data, rs)
	readAll(t, mustBlob(t, f, srv.host()+"/team-b/other@"+digest.FromString("x").String(), srv.desc()), data, rs)
	if r := srv.blobRequests(); r != 1 {
		t.Fatalf("requests = %d, want 1", r)
	}
}

func TestCacheLRUEviction(t *testing.T) {
	data := randBytes(32, 1<<20)
	srv := newFakeRegistry(t, data, nil)
	const chunk = 10_000
	const capEntries = 5
	capBytes := int64(capEntries * (chunk + trailerSize))
	f := newTestFetcher(t, Config{CacheDir: t.TempDir(), CacheMaxBytes: capBytes, MemCacheMaxBytes: -1})
	b := mustBlob(t, f, srv.ref(), srv.desc())
	ctx := context.Background()
	rng := func(i int) Range { return Range{int64(i) * 20_000, chunk} }
	for i := range 12 {
		readAll(t, b, data, []Range{rng(i)})
		if u := f.CacheUsage(); u.Bytes > capBytes {
			t.Fatalf("after %d reads usage %d > cap %d", i+1, u.Bytes, capBytes)
		}
		if i == 8 {
			// Touch an old entry so it becomes most recent.
			if _, err := b.ReadRange(ctx, rng(7).Off, chunk); err != nil {
				t.Fatal(err)
			}
		}
	}
	u := f.CacheUsage()
	if u.Entries != capEntries || u.Evictions != 12-capEntries {
		t.Fatalf("entries %d evictions %d, want %d and %d", u.Entries, u.Evictions, capEntries, 12-capEntries)
	}
	// Most recent: 11, 10, 9, 7 (touched), 8. Evicted: 0..6.
	before := srv.blobRequests()
	for _, i := range []int{7, 8, 9, 10, 11} {
		readAll(t, b, data, []Range{rng(i)})
	}
	if r := srv.blobRequests(); r != before {
		t.Fatalf("recent entries were evicted: %d new requests", r-before)
	}
	readAll(t, b, data, []Range{rng(6)})
	if r := srv.blobRequests(); r != before+1 {
		t.Fatalf("oldest entry was kept")
	}
	// Files on disk match the accounting.
	var files int
	_ = filepath.WalkDir(f.cfg.CacheDir, func(p string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			files++
		}
		return nil
	})
	if files != capEntries {
		t.Fatalf("%d files on disk, want %d", files, capEntries)
	}
	// A restart with a smaller cap evicts down to it.
	_ = f.Close()
	f2 := newTestFetcher(t, Config{CacheDir: f.cfg.CacheDir, CacheMaxBytes: 2 * (chunk + trailerSize)})
	if u := f2.CacheUsage(); u.Entries != 2 {
		t.Fatalf("after restart with smaller cap: %d entries", u.Entries)
	}
}

func TestCacheCorruption(t *testing.T) {
	data := randBytes(33, 256<<10)
	const off, n = 1000, 8000
	tests := []struct {
		name    string
		damage  func(t *testing.T, path string)
		restart bool // damage found by the startup scan rather than on read
	}{
		{name: "truncated", damage: func(t *testing.T, p string) { must(t, os.Truncate(p, n/2)) }, restart: true},
		{name: "truncated while running", damage: func(t *testing.T, p string) { must(t, os.Truncate(p, n/2)) }},
		{name: "flipped byte", damage: func(t *testing.T, p string) {
			b, _ := os.ReadFile(p)
			b[n/3] ^= 0x01
			must(t, os.WriteFile(p, b, 0o600))
		}},
		{name: "flipped byte, restart", damage: func(t *testing.T, p string) {
			b, _ := os.ReadFile(p)
			b[0] ^= 0x80
			must(t, os.WriteFile(p, b, 0o600))
		}, restart: true},
		{name: "bad trailer", damage: func(t *testing.T, p string) {
			b, _ := os.ReadFile(p)
			copy(b[n:], "XXXX")
			must(t, os.WriteFile(p, b, 0o600))
		}},
		{name: "deleted", damage: func(t *testing.T, p string) { must(t, os.Remove(p)) }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			srv := newFakeRegistry(t, data, nil)
			dir := t.TempDir()
			cfg := Config{CacheDir: dir, MemCacheMaxBytes: -1}
			f := newTestFetcher(t, cfg)
			b := mustBlob(t, f, srv.ref(), srv.desc())
			readAll(t, b, data, []Range{{off, n}})
			p := f.disk.path(b.key(Range{off, n}))
			if _, err := os.Stat(p); err != nil {
				t.Fatalf("cache file: %v", err)
			}
			if !strings.HasPrefix(p, filepath.Join(dir, "sha256", srv.dgst.Encoded()[:2], srv.dgst.Encoded())) {
				t.Fatalf("unexpected layout %s", p)
			}
			tc.damage(t, p)
			if tc.restart {
				_ = f.Close()
				f = newTestFetcher(t, cfg)
				b = mustBlob(t, f, srv.ref(), srv.desc())
			}
			readAll(t, b, data, []Range{{off, n}})
			if r := srv.blobRequests(); r != 2 {
				t.Fatalf("requests %d, want 2 (refetch)", r)
			}
			// The refetched entry is sound again.
			got, err := os.ReadFile(p)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := decodeEntry(got, n); err != nil {
				t.Fatalf("rewritten entry: %v", err)
			}
		})
	}
}

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func TestInvalidate(t *testing.T) {
	data := randBytes(34, 256<<10)
	tests := []struct {
		name          string
		inv           Range
		wantRefetched []bool // per range below
	}{
		{name: "exact", inv: Range{1000, 1000}, wantRefetched: []bool{true, false, false}},
		{name: "overlapping two", inv: Range{1500, 4000}, wantRefetched: []bool{true, true, false}},
		{name: "no overlap", inv: Range{2000, 3000}, wantRefetched: []bool{false, false, false}},
	}
	rs := []Range{{1000, 1000}, {5000, 1000}, {100_000, 1000}}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			srv := newFakeRegistry(t, data, nil)
			f := newTestFetcher(t, Config{CacheDir: t.TempDir(), CoalesceGap: -1, MaxRangesPerRequest: 1})
			b := mustBlob(t, f, srv.ref(), srv.desc())
			readAll(t, b, data, rs)
			b.Invalidate(tc.inv.Off, tc.inv.Len)
			for i, r := range rs {
				before := srv.blobRequests()
				readAll(t, b, data, []Range{r})
				if got := srv.blobRequests() > before; got != tc.wantRefetched[i] {
					t.Errorf("range %v refetched = %v, want %v", r, got, tc.wantRefetched[i])
				}
			}
		})
	}
}

func TestMemCache(t *testing.T) {
	data := randBytes(35, 1<<20)
	srv := newFakeRegistry(t, data, nil)
	f := newTestFetcher(t, Config{MemCacheMaxBytes: 64 << 10}) // items up to 4 KiB
	b := mustBlob(t, f, srv.ref(), srv.desc())
	readAll(t, b, data, []Range{{0, 4096}, {10_000, 8192}})
	before := srv.blobRequests()
	readAll(t, b, data, []Range{{0, 4096}})
	if srv.blobRequests() != before {
		t.Fatal("small chunk not served from memory")
	}
	readAll(t, b, data, []Range{{10_000, 8192}})
	if srv.blobRequests() != before+1 {
		t.Fatal("large chunk should not be kept in memory")
	}
	if u := f.CacheUsage(); u.MemHits != 1 || u.MemEntries != 1 || u.MemBytes != 4096 {
		t.Fatalf("mem stats %+v", u)
	}
	// Fill beyond the cap: usage stays bounded.
	for i := range 40 {
		readAll(t, b, data, []Range{{int64(i) * 20_000, 4096}})
	}
	if u := f.CacheUsage(); u.MemBytes > 64<<10 {
		t.Fatalf("mem usage %d over cap", u.MemBytes)
	}
}

func TestCacheStaleTempFilesRemoved(t *testing.T) {
	dir := t.TempDir()
	must(t, os.MkdirAll(filepath.Join(dir, tmpDirName), 0o700))
	must(t, os.WriteFile(filepath.Join(dir, tmpDirName, "chunk-123"), []byte("partial"), 0o600))
	stray := filepath.Join(dir, "sha256", "ab", "not-a-digest", "1-2")
	must(t, os.MkdirAll(filepath.Dir(stray), 0o700))
	must(t, os.WriteFile(stray, []byte("x"), 0o600))
	f := newTestFetcher(t, Config{CacheDir: dir})
	if u := f.CacheUsage(); u.Entries != 0 || u.Bytes != 0 {
		t.Fatalf("usage %+v", u)
	}
	for _, p := range []string{filepath.Join(dir, tmpDirName, "chunk-123"), stray} {
		if _, err := os.Stat(p); !os.IsNotExist(err) {
			t.Errorf("%s survived the scan", p)
		}
	}
}

func TestCacheLRUOrderSurvivesRestart(t *testing.T) {
	data := randBytes(36, 256<<10)
	srv := newFakeRegistry(t, data, nil)
	dir := t.TempDir()
	const chunk = 1000
	capBytes := int64(3 * (chunk + trailerSize))
	f := newTestFetcher(t, Config{CacheDir: dir, CacheMaxBytes: capBytes, MemCacheMaxBytes: -1})
	b := mustBlob(t, f, srv.ref(), srv.desc())
	for i := range 3 {
		readAll(t, b, data, []Range{{int64(i) * 10_000, chunk}})
	}
	// Make entry 0 the oldest on disk regardless of timer resolution.
	old := time.Now().Add(-time.Hour)
	must(t, os.Chtimes(f.disk.path(b.key(Range{0, chunk})), old, old))
	_ = f.Close()
	f2 := newTestFetcher(t, Config{CacheDir: dir, CacheMaxBytes: capBytes, MemCacheMaxBytes: -1})
	b2 := mustBlob(t, f2, srv.ref(), srv.desc())
	readAll(t, b2, data, []Range{{50_000, chunk}}) // evicts the oldest
	before := srv.blobRequests()
	readAll(t, b2, data, []Range{{10_000, chunk}, {20_000, chunk}})
	if srv.blobRequests() != before {
		t.Fatal("a recent entry was evicted instead of the oldest")
	}
	readAll(t, b2, data, []Range{{0, chunk}})
	if srv.blobRequests() != before+1 {
		t.Fatal("the oldest entry was kept")
	}
}
