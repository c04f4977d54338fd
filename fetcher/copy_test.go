package fetcher

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"os"
	"strconv"
	"strings"
	"testing"

	"github.com/opencontainers/go-digest"
)

// rangeLen is the length of a single "bytes=a-b" Range header.
func rangeLen(t *testing.T, h string) int64 {
	t.Helper()
	a, b, ok := strings.Cut(strings.TrimPrefix(h, "bytes="), "-")
	lo, err1 := strconv.ParseInt(a, 10, 64)
	hi, err2 := strconv.ParseInt(b, 10, 64)
	if !ok || err1 != nil || err2 != nil || strings.Contains(h, ",") {
		t.Fatalf("Range %q: not a single range", h)
	}
	return hi - lo + 1
}

// TestCopyTo writes whole blobs out of a capped disk cache that holds some
// of their ranges (overlapping, evicted, damaged), fetching the gaps: the
// bytes are the blob's, the cached ones are not fetched again, every
// fetched span is at most MaxSpan, and nothing fetched is cached.
func TestCopyTo(t *testing.T) {
	const (
		size    = 1 << 20
		maxSpan = 64 << 10
		entry   = 50_000
	)
	tests := []struct {
		name   string
		cached bool
		reads  []Range // read (and so cached) first
		cap    int64   // disk cache cap
		damage bool    // remove the first cached range's file behind the cache's back
		// wantCached: bytes CopyTo must take from the cache (-1: at least one)
		wantCached int64
	}{
		{name: "nothing cached", cached: true, cap: 8 << 20},
		{name: "disjoint and overlapping ranges", cached: true, cap: 8 << 20,
			reads:      []Range{{0, entry}, {20_000, entry}, {300_000, entry}, {300_000, 2 * entry}, {size - entry, entry}},
			wantCached: 70_000 + 2*entry + entry},
		{name: "cache capped below the reads: the evicted are fetched", cached: true, cap: 3 * (entry + trailerSize),
			reads:      []Range{{0, entry}, {100_000, entry}, {200_000, entry}, {400_000, entry}, {600_000, entry}},
			wantCached: 3 * entry},
		{name: "entry gone since listed", cached: true, cap: 8 << 20, damage: true,
			reads:      []Range{{0, entry}, {500_000, entry}},
			wantCached: entry},
		{name: "registry only", cached: false, cap: 8 << 20,
			reads: []Range{{0, entry}, {500_000, entry}}},
	}
	for i, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			data := randBytes(uint64(90+i), size)
			srv := newFakeRegistry(t, data, nil)
			dir := t.TempDir()
			f := newTestFetcher(t, Config{CacheDir: dir, CacheMaxBytes: tc.cap, MemCacheMaxBytes: -1, MaxSpan: maxSpan, CoalesceGap: -1})
			b := mustBlob(t, f, srv.ref(), srv.desc())
			readAll(t, b, data, tc.reads)
			if tc.damage {
				if err := os.Remove(f.disk.path(b.key(tc.reads[0]))); err != nil {
					t.Fatal(err)
				}
			}
			before, usage := len(srv.requests()), f.CacheUsage()
			h := sha256.New()
			st, err := b.CopyTo(context.Background(), h, tc.cached)
			if err != nil {
				t.Fatal(err)
			}
			if got := digest.NewDigestFromEncoded(digest.SHA256, hex.EncodeToString(h.Sum(nil))); got != srv.dgst {
				t.Fatalf("CopyTo wrote %s, want the blob %s", got, srv.dgst)
			}
			want := tc.wantCached
			if st.Cached+st.Fetched != size || (want >= 0 && st.Cached != want) || (want < 0 && st.Cached == 0) {
				t.Fatalf("CopyTo took %d bytes from the cache and fetched %d, want %d cached of %d", st.Cached, st.Fetched, want, size)
			}
			var fetched int64
			for _, r := range srv.requests()[before:] {
				n := rangeLen(t, r.Range)
				if n > maxSpan {
					t.Errorf("fetched a span of %d bytes, over MaxSpan %d", n, maxSpan)
				}
				fetched += n
			}
			if fetched != st.Fetched {
				t.Errorf("the registry sent %d bytes, CopyTo reports %d fetched", fetched, st.Fetched)
			}
			if u := f.CacheUsage(); u.Entries > usage.Entries || u.Bytes > tc.cap {
				t.Errorf("cache after CopyTo: %d entries, %d bytes (cap %d); before: %d entries", u.Entries, u.Bytes, tc.cap, usage.Entries)
			}
		})
	}
}

// BenchmarkCopyTo writes a 64 MiB blob held by the disk cache in 1 MiB
// ranges into sha256, as a complete layer's verification does.
func BenchmarkCopyTo(b *testing.B) {
	const size, entry = 64 << 20, 1 << 20
	data := randBytes(99, size)
	srv := newFakeRegistry(b, data, nil)
	f := newTestFetcher(b, Config{CacheDir: b.TempDir(), MemCacheMaxBytes: -1})
	blob := mustBlob(b, f, srv.ref(), srv.desc())
	for off := int64(0); off < size; off += entry {
		if _, err := blob.ReadRange(context.Background(), off, entry); err != nil {
			b.Fatal(err)
		}
	}
	before := srv.blobRequests()
	b.SetBytes(size)
	b.ReportAllocs()
	for b.Loop() {
		h := sha256.New()
		if st, err := blob.CopyTo(context.Background(), h, true); err != nil || st.Fetched != 0 {
			b.Fatalf("%+v %v", st, err)
		}
	}
	if n := srv.blobRequests() - before; n != 0 {
		b.Fatalf("%d requests for a cached blob", n)
	}
}
