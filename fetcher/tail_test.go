package fetcher

import (
	"bytes"
	"context"
	"net/http"
	"strings"
	"testing"

	"github.com/lazysnap/lazysnap/internal/testenv/registry"
)

// TestBlobWithTail: the size and the tail of a blob come with one request
// when the server does suffix ranges, and with the HEAD and range read of
// before when it does not; the bytes are right either way.
func TestBlobWithTail(t *testing.T) {
	data := randBytes(60, 300<<10)
	ignoreRange := func(n int, w http.ResponseWriter, r *http.Request) bool {
		if r.Method == http.MethodGet && strings.HasPrefix(r.Header.Get("Range"), "bytes=-") {
			w.Header().Set("Content-Length", "300000000")
			w.WriteHeader(http.StatusOK) // pretends to send a larger whole blob
			return true
		}
		return false
	}
	refuseSuffix := func(n int, w http.ResponseWriter, r *http.Request) bool {
		if strings.HasPrefix(r.Header.Get("Range"), "bytes=-") {
			w.WriteHeader(http.StatusRequestedRangeNotSatisfiable)
			return true
		}
		return false
	}
	wrongSuffix := func(n int, w http.ResponseWriter, r *http.Request) bool {
		if strings.HasPrefix(r.Header.Get("Range"), "bytes=-") {
			r.Header.Set("Range", "bytes=0-99") // answers another range
		}
		return false
	}
	tests := []struct {
		name      string
		hook      func(int, http.ResponseWriter, *http.Request) bool
		knownSize bool
		tail      int64
		wantReqs  int
		wantSize  int64
	}{
		{name: "size unknown: one suffix range", tail: 64 << 10, wantReqs: 1},
		{name: "size known: one range", knownSize: true, tail: 64 << 10, wantReqs: 1},
		{name: "blob smaller than the tail", tail: 1 << 20, wantReqs: 1},
		{name: "suffix refused: HEAD and range", hook: refuseSuffix, tail: 64 << 10, wantReqs: 3},
		{name: "suffix answered wrongly: HEAD and range", hook: wrongSuffix, tail: 64 << 10, wantReqs: 3},
		{name: "suffix ignored (200): its length, then a range", hook: ignoreRange, tail: 64 << 10, wantReqs: 2, wantSize: 300000000},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := newFakeRegistry(t, data, tc.hook)
			f := newTestFetcher(t, Config{CacheDir: t.TempDir()})
			desc := s.desc()
			if !tc.knownSize {
				desc.Size = 0
			}
			ctx := context.Background()
			b, tail, err := f.BlobWithTail(ctx, s.ref(), desc, tc.tail)
			if tc.wantSize != 0 { // the lying server: the range read fails
				if err == nil {
					t.Fatal("BlobWithTail succeeded against a server lying about the size")
				}
				if n := s.blobRequests(); n != tc.wantReqs {
					t.Errorf("%d blob requests, want %d: %+v", n, tc.wantReqs, s.requests())
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if b.Size() != int64(len(data)) {
				t.Errorf("size %d, want %d", b.Size(), len(data))
			}
			want := data[len(data)-int(min(tc.tail, int64(len(data)))):]
			if !bytes.Equal(tail, want) {
				t.Errorf("tail of %d bytes differs from the blob's last %d", len(tail), len(want))
			}
			if n := s.blobRequests(); n != tc.wantReqs {
				t.Errorf("%d blob requests, want %d: %+v", n, tc.wantReqs, s.requests())
			}
			// cached: opening again with the size known costs nothing
			desc.Size = b.Size()
			if _, again, err := f.BlobWithTail(ctx, s.ref(), desc, tc.tail); err != nil || !bytes.Equal(again, want) {
				t.Fatalf("again: %v", err)
			}
			if n := s.blobRequests(); n != tc.wantReqs {
				t.Errorf("second open made %d more requests, want 0", n-tc.wantReqs)
			}
		})
	}
	t.Run("invalid tail size", func(t *testing.T) {
		s := newFakeRegistry(t, data, nil)
		f := newTestFetcher(t, Config{})
		if _, _, err := f.BlobWithTail(context.Background(), s.ref(), s.desc(), 0); err == nil {
			t.Fatal("tail of 0 bytes accepted")
		}
	})
}

// TestRegistryBlobWithTail: the CNCF registry answers a suffix range with
// the size, so opening a layer of unknown size is one request.
func TestRegistryBlobWithTail(t *testing.T) {
	r := registry.Start(t, registry.Options{})
	layer := randBytes(61, 1<<20)
	img := pushTestImage(t, r, "tail/app", layer)
	// plain HTTP from hosts.toml: containerd's default for localhost tries
	// TLS first, which the counters would see as a request
	f := newTestFetcher(t, Config{HostsDir: writeHosts(t, r.Host, r.Endpoint())})
	ld := img.Layers[0]
	ld.Size = 0
	before := f.Stats()[r.Host].Requests
	b, tail, err := f.BlobWithTail(context.Background(), img.Ref, ld, 64<<10)
	if err != nil {
		t.Fatal(err)
	}
	if n := f.Stats()[r.Host].Requests - before; n != 1 {
		t.Errorf("%d requests, want 1", n)
	}
	if b.Size() != int64(len(layer)) || !bytes.Equal(tail, layer[len(layer)-64<<10:]) {
		t.Errorf("size %d, tail of %d bytes: wrong", b.Size(), len(tail))
	}
}
