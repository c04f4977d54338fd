package fetcher

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"mime/multipart"
	"net/http"
	"net/http/httptest"
	"net/textproto"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// writePartial answers a single range request with 206 and the given
// Content-Range bounds and bytes.
func writePartial(w http.ResponseWriter, off, end, total int64, body []byte) {
	w.Header().Set("Content-Range", fmt.Sprintf("bytes %d-%d/%d", off, end-1, total))
	w.Header().Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(http.StatusPartialContent)
	_, _ = w.Write(body)
}

func TestSingleRangeFaults(t *testing.T) {
	data := randBytes(1, 1<<20)
	size := int64(len(data))
	const off, n = 1000, 5000
	tests := []struct {
		name     string
		hook     func(t *testing.T, n int, w http.ResponseWriter, r *http.Request) bool
		wantErr  error
		requests int // blob requests expected (Retries: 2)
	}{
		{name: "well-behaved", requests: 1},
		{
			name: "200 full body instead of 206 is sliced",
			hook: func(t *testing.T, _ int, w http.ResponseWriter, r *http.Request) bool {
				w.Header().Set("Content-Length", strconv.Itoa(len(data)))
				_, _ = w.Write(data)
				return true
			},
			requests: 1,
		},
		{
			name: "200 body of the wrong size is rejected",
			hook: func(t *testing.T, _ int, w http.ResponseWriter, r *http.Request) bool {
				_, _ = w.Write(data[:len(data)-1])
				return true
			},
			wantErr: ErrBadResponse, requests: 3,
		},
		{
			name: "wrong Content-Range is rejected",
			hook: func(t *testing.T, _ int, w http.ResponseWriter, r *http.Request) bool {
				a, e := parseRange(t, r.Header.Get("Range"))
				writePartial(w, a+1, e+1, size, data[a+1:e+1])
				return true
			},
			wantErr: ErrBadResponse, requests: 3,
		},
		{
			name: "wrong total size in Content-Range is rejected",
			hook: func(t *testing.T, _ int, w http.ResponseWriter, r *http.Request) bool {
				a, e := parseRange(t, r.Header.Get("Range"))
				writePartial(w, a, e, size+1, data[a:e])
				return true
			},
			wantErr: ErrBadResponse, requests: 3,
		},
		{
			name: "wrong Content-Range once, then retry succeeds",
			hook: func(t *testing.T, n int, w http.ResponseWriter, r *http.Request) bool {
				if n > 1 {
					return false
				}
				a, e := parseRange(t, r.Header.Get("Range"))
				writePartial(w, a+7, e+7, size, data[a+7:e+7])
				return true
			},
			requests: 2,
		},
		{
			name: "body longer than Content-Range is rejected",
			hook: func(t *testing.T, _ int, w http.ResponseWriter, r *http.Request) bool {
				a, e := parseRange(t, r.Header.Get("Range"))
				w.Header().Set("Content-Range", fmt.Sprintf("bytes %d-%d/%d", a, e-1, size))
				w.WriteHeader(http.StatusPartialContent)
				w.(http.Flusher).Flush() // chunked: no Content-Length
				_, _ = w.Write(data[a : e+10])
				return true
			},
			wantErr: ErrBadResponse, requests: 3,
		},
		{
			name: "short body, then retry succeeds",
			hook: func(t *testing.T, n int, w http.ResponseWriter, r *http.Request) bool {
				if n > 1 {
					return false
				}
				a, e := parseRange(t, r.Header.Get("Range"))
				w.Header().Set("Content-Range", fmt.Sprintf("bytes %d-%d/%d", a, e-1, size))
				w.Header().Set("Content-Length", strconv.FormatInt(e-a, 10))
				w.WriteHeader(http.StatusPartialContent)
				_, _ = w.Write(data[a : a+(e-a)/2])
				return true
			},
			requests: 2,
		},
		{
			name: "500, then retry succeeds",
			hook: func(t *testing.T, n int, w http.ResponseWriter, r *http.Request) bool {
				if n > 1 {
					return false
				}
				w.WriteHeader(http.StatusInternalServerError)
				return true
			},
			requests: 2,
		},
		{
			name: "429 twice, then retry succeeds",
			hook: func(t *testing.T, n int, w http.ResponseWriter, r *http.Request) bool {
				if n > 2 {
					return false
				}
				w.WriteHeader(http.StatusTooManyRequests)
				return true
			},
			requests: 3,
		},
		{
			name: "503 always ends in ErrUnavailable",
			hook: func(t *testing.T, _ int, w http.ResponseWriter, r *http.Request) bool {
				w.WriteHeader(http.StatusServiceUnavailable)
				return true
			},
			wantErr: ErrUnavailable, requests: 3,
		},
		{
			name: "connection reset, then retry succeeds",
			hook: func(t *testing.T, n int, w http.ResponseWriter, r *http.Request) bool {
				if n > 1 {
					return false
				}
				resetConn(w)
				return true
			},
			requests: 2,
		},
		{
			name: "connection reset always ends in ErrUnavailable",
			hook: func(t *testing.T, _ int, w http.ResponseWriter, r *http.Request) bool {
				resetConn(w)
				return true
			},
			wantErr: ErrUnavailable, requests: 3,
		},
		{
			name: "404 is not retried",
			hook: func(t *testing.T, _ int, w http.ResponseWriter, r *http.Request) bool {
				http.NotFound(w, r)
				return true
			},
			wantErr: ErrNotFound, requests: 1,
		},
		{
			name: "416 is not retried",
			hook: func(t *testing.T, _ int, w http.ResponseWriter, r *http.Request) bool {
				w.WriteHeader(http.StatusRequestedRangeNotSatisfiable)
				return true
			},
			wantErr: ErrRangeNotSatisfied, requests: 1,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var hook func(int, http.ResponseWriter, *http.Request) bool
			if tc.hook != nil {
				hook = func(n int, w http.ResponseWriter, r *http.Request) bool { return tc.hook(t, n, w, r) }
			}
			srv := newFakeRegistry(t, data, hook)
			f := newTestFetcher(t, Config{Retries: 2, CacheDir: t.TempDir()})
			b := mustBlob(t, f, srv.ref(), srv.desc())
			got, err := b.ReadRange(context.Background(), off, n)
			if tc.wantErr != nil {
				if !errors.Is(err, tc.wantErr) {
					t.Fatalf("err = %v, want %v", err, tc.wantErr)
				}
				if !strings.Contains(err.Error(), srv.dgst.String()) || !strings.Contains(err.Error(), srv.host()) {
					t.Errorf("error lacks digest or host: %v", err)
				}
				if u := f.CacheUsage(); u.Entries != 0 {
					t.Errorf("failed read left %d cache entries", u.Entries)
				}
			} else if err != nil {
				t.Fatalf("ReadRange: %v", err)
			} else if !bytes.Equal(got, data[off:off+n]) {
				t.Fatal("wrong bytes returned")
			}
			if r := srv.blobRequests(); r != tc.requests {
				t.Errorf("blob requests = %d, want %d", r, tc.requests)
			}
		})
	}
}

// multipartBody writes a multipart/byteranges answer with the given parts.
func multipartBody(w http.ResponseWriter, data []byte, parts []Range) {
	var buf bytes.Buffer
	mw := multipart.NewWriter(&buf)
	for _, p := range parts {
		pw, _ := mw.CreatePart(textproto.MIMEHeader{
			"Content-Type":  {"application/octet-stream"},
			"Content-Range": {fmt.Sprintf("bytes %d-%d/%d", p.Off, p.End()-1, len(data))},
		})
		_, _ = pw.Write(data[p.Off:p.End()])
	}
	_ = mw.Close()
	w.Header().Set("Content-Type", "multipart/byteranges; boundary="+mw.Boundary())
	w.WriteHeader(http.StatusPartialContent)
	_, _ = w.Write(buf.Bytes())
}

func TestMultiRange(t *testing.T) {
	data := randBytes(2, 1<<20)
	ranges := []Range{{0, 100}, {300_000, 4096}, {700_000, 1}, {1<<20 - 10, 10}}
	isMulti := func(r *http.Request) bool { return strings.Contains(r.Header.Get("Range"), ",") }
	tests := []struct {
		name      string
		hook      func(n int, w http.ResponseWriter, r *http.Request) bool
		wantErr   error
		requests  int // for the first ReadRanges
		requests2 int // for a second ReadRanges of other ranges
	}{
		{name: "server supports multi-range", requests: 1, requests2: 1},
		{
			name: "server ignores multi-range (200): fall back to single ranges",
			hook: func(_ int, w http.ResponseWriter, r *http.Request) bool {
				if isMulti(r) {
					r.Header.Del("Range")
				}
				return false
			},
			requests: 1 + 4, requests2: 4,
		},
		{
			name: "server rejects multi-range (416): fall back",
			hook: func(_ int, w http.ResponseWriter, r *http.Request) bool {
				if isMulti(r) {
					w.WriteHeader(http.StatusRequestedRangeNotSatisfiable)
					return true
				}
				return false
			},
			requests: 1 + 4, requests2: 4,
		},
		{
			name: "server answers only the first range: fall back",
			hook: func(_ int, w http.ResponseWriter, r *http.Request) bool {
				if isMulti(r) {
					first, _, _ := strings.Cut(r.Header.Get("Range"), ",")
					r.Header.Set("Range", first)
				}
				return false
			},
			requests: 1 + 4, requests2: 4,
		},
		{
			name: "server merges all ranges into one part",
			hook: func(_ int, w http.ResponseWriter, r *http.Request) bool {
				if isMulti(r) {
					multipartBody(w, data, []Range{{0, int64(len(data))}})
					return true
				}
				return false
			},
			requests: 1, requests2: 1,
		},
		{
			name: "multipart part missing: bad response after retries",
			hook: func(_ int, w http.ResponseWriter, r *http.Request) bool {
				multipartBody(w, data, ranges[:2])
				return true
			},
			wantErr: ErrBadResponse, requests: 3,
		},
		{
			name: "multipart part outside the request: bad response",
			hook: func(_ int, w http.ResponseWriter, r *http.Request) bool {
				multipartBody(w, data, []Range{{0, 100}, {200_000, 10}})
				return true
			},
			wantErr: ErrBadResponse, requests: 3,
		},
		{
			name: "multipart part with wrong bytes count: short body retried",
			hook: func(n int, w http.ResponseWriter, r *http.Request) bool {
				if n > 1 {
					return false
				}
				var buf bytes.Buffer
				mw := multipart.NewWriter(&buf)
				pw, _ := mw.CreatePart(textproto.MIMEHeader{"Content-Range": {fmt.Sprintf("bytes 0-99/%d", len(data))}})
				_, _ = pw.Write(data[:50])
				_ = mw.Close()
				w.Header().Set("Content-Type", "multipart/byteranges; boundary="+mw.Boundary())
				w.WriteHeader(http.StatusPartialContent)
				_, _ = w.Write(buf.Bytes())
				return true
			},
			requests: 2, requests2: 1,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			srv := newFakeRegistry(t, data, tc.hook)
			f := newTestFetcher(t, Config{Retries: 2, MemCacheMaxBytes: -1})
			b := mustBlob(t, f, srv.ref(), srv.desc())
			got, err := b.ReadRanges(context.Background(), ranges)
			if tc.wantErr != nil {
				if !errors.Is(err, tc.wantErr) {
					t.Fatalf("err = %v, want %v", err, tc.wantErr)
				}
			} else {
				if err != nil {
					t.Fatalf("ReadRanges: %v", err)
				}
				for i, r := range ranges {
					if !bytes.Equal(got[i], data[r.Off:r.End()]) {
						t.Fatalf("range %d: wrong bytes", i)
					}
				}
			}
			if n := srv.blobRequests(); n != tc.requests {
				t.Errorf("requests = %d, want %d", n, tc.requests)
			}
			if tc.wantErr != nil {
				return
			}
			before := srv.blobRequests()
			more := []Range{{50_000, 10}, {400_000, 10}, {800_000, 10}, {900_000, 10}}
			got, err = b.ReadRanges(context.Background(), more)
			if err != nil {
				t.Fatalf("second ReadRanges: %v", err)
			}
			for i, r := range more {
				if !bytes.Equal(got[i], data[r.Off:r.End()]) {
					t.Fatalf("second read, range %d: wrong bytes", i)
				}
			}
			if n := srv.blobRequests() - before; n != tc.requests2 {
				t.Errorf("second read requests = %d, want %d", n, tc.requests2)
			}
		})
	}
}

func TestCoalescing(t *testing.T) {
	data := randBytes(3, 1<<20)
	// Three ranges within 32 KiB of each other and one far away.
	ranges := []Range{{10_000, 1000}, {12_000, 1000}, {40_000, 500}, {900_000, 100}}
	tests := []struct {
		name     string
		cfg      Config
		wantHdr  string
		requests int
	}{
		{name: "default coalesces near ranges", cfg: Config{}, wantHdr: "bytes=10000-40499,900000-900099", requests: 1},
		{name: "coalescing off", cfg: Config{CoalesceGap: -1}, wantHdr: "bytes=10000-10999,12000-12999,40000-40499,900000-900099", requests: 1},
		{name: "multi-range off", cfg: Config{MaxRangesPerRequest: 1}, requests: 2},
		{name: "both off", cfg: Config{CoalesceGap: -1, MaxRangesPerRequest: 1}, requests: 4},
		{name: "two spans per request", cfg: Config{CoalesceGap: -1, MaxRangesPerRequest: 2}, requests: 2},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			srv := newFakeRegistry(t, data, nil)
			tc.cfg.MemCacheMaxBytes = -1
			f := newTestFetcher(t, tc.cfg)
			b := mustBlob(t, f, srv.ref(), srv.desc())
			got, err := b.ReadRanges(context.Background(), ranges)
			if err != nil {
				t.Fatal(err)
			}
			for i, r := range ranges {
				if !bytes.Equal(got[i], data[r.Off:r.End()]) {
					t.Fatalf("range %d: wrong bytes", i)
				}
			}
			reqs := srv.requests()
			if len(reqs) != tc.requests {
				t.Fatalf("requests = %d (%v), want %d", len(reqs), reqs, tc.requests)
			}
			if tc.wantHdr != "" && reqs[0].Range != tc.wantHdr {
				t.Errorf("Range = %q, want %q", reqs[0].Range, tc.wantHdr)
			}
		})
	}
}

// TestExpiredRedirect: the registry redirects blob GETs to "storage" with a
// token; the fetcher goes to storage directly while the token is valid, and
// re-resolves through the registry once storage answers 403.
func TestExpiredRedirect(t *testing.T) {
	data := randBytes(4, 1<<20)
	var token, storage403, storageOK atomic.Int64
	token.Store(1)
	store := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "" {
			t.Errorf("registry credentials leaked to storage")
		}
		if r.URL.Query().Get("token") != strconv.FormatInt(token.Load(), 10) {
			storage403.Add(1)
			http.Error(w, "Request has expired", http.StatusForbidden)
			return
		}
		storageOK.Add(1)
		http.ServeContent(w, r, "", time.Time{}, bytes.NewReader(data))
	}))
	t.Cleanup(store.Close)
	srv := newFakeRegistry(t, data, func(_ int, w http.ResponseWriter, r *http.Request) bool {
		http.Redirect(w, r, fmt.Sprintf("%s/blob?token=%d", store.URL, token.Load()), http.StatusTemporaryRedirect)
		return true
	})
	f := newTestFetcher(t, Config{MemCacheMaxBytes: -1})
	b := mustBlob(t, f, srv.ref(), srv.desc())
	ctx := context.Background()
	read := func(off, n int64) {
		t.Helper()
		got, err := b.ReadRange(ctx, off, n)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, data[off:off+n]) {
			t.Fatal("wrong bytes")
		}
	}
	read(0, 1000)
	read(5000, 1000) // straight to storage
	if r, s := srv.blobRequests(), storageOK.Load(); r != 1 || s != 2 {
		t.Fatalf("registry requests %d (want 1), storage %d (want 2)", r, s)
	}
	token.Add(1) // the pre-signed URL expires
	read(9000, 1000)
	if r, s, x := srv.blobRequests(), storageOK.Load(), storage403.Load(); r != 2 || s != 3 || x != 1 {
		t.Fatalf("after expiry: registry %d (want 2), storage ok %d (want 3), 403s %d (want 1)", r, s, x)
	}
}

func TestTimeouts(t *testing.T) {
	data := randBytes(5, 64<<10)
	tests := []struct {
		name string
		hook func(n int, w http.ResponseWriter, r *http.Request) bool
	}{
		{
			name: "slow headers",
			hook: func(_ int, w http.ResponseWriter, r *http.Request) bool {
				select {
				case <-r.Context().Done():
				case <-time.After(5 * time.Second):
				}
				return true
			},
		},
		{
			name: "stalled body",
			hook: func(_ int, w http.ResponseWriter, r *http.Request) bool {
				a, e := parseRange(t, r.Header.Get("Range"))
				w.Header().Set("Content-Range", fmt.Sprintf("bytes %d-%d/%d", a, e-1, len(data)))
				w.Header().Set("Content-Length", strconv.FormatInt(e-a, 10))
				w.WriteHeader(http.StatusPartialContent)
				_, _ = w.Write(data[a : a+10])
				w.(http.Flusher).Flush()
				select {
				case <-r.Context().Done():
				case <-time.After(5 * time.Second):
				}
				return true
			},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			srv := newFakeRegistry(t, data, tc.hook)
			f := newTestFetcher(t, Config{Retries: 1, RequestTimeout: 150 * time.Millisecond})
			b := mustBlob(t, f, srv.ref(), srv.desc())
			start := time.Now()
			_, err := b.ReadRange(context.Background(), 0, 1000)
			if !errors.Is(err, ErrTimeout) {
				t.Fatalf("err = %v, want ErrTimeout", err)
			}
			if el := time.Since(start); el > 2*time.Second {
				t.Errorf("took %v", el)
			}
			if n := srv.blobRequests(); n != 2 {
				t.Errorf("requests = %d, want 2", n)
			}
			t.Logf("error: %v", err)
		})
	}
}

func TestCallerDeadline(t *testing.T) {
	data := randBytes(6, 64<<10)
	srv := newFakeRegistry(t, data, func(_ int, w http.ResponseWriter, r *http.Request) bool {
		<-r.Context().Done()
		return true
	})
	f := newTestFetcher(t, Config{})
	b := mustBlob(t, f, srv.ref(), srv.desc())
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	_, err := b.ReadRange(ctx, 0, 10)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err = %v, want context.DeadlineExceeded", err)
	}
}

func TestSizeDiscovery(t *testing.T) {
	data := randBytes(7, 300_000)
	tests := []struct {
		name     string
		hook     func(n int, w http.ResponseWriter, r *http.Request) bool
		wantReqs []string // methods+Range in order
	}{
		{name: "HEAD", wantReqs: []string{"HEAD "}},
		{
			name: "HEAD not allowed: ranged GET",
			hook: func(_ int, w http.ResponseWriter, r *http.Request) bool {
				if r.Method == http.MethodHead {
					w.WriteHeader(http.StatusMethodNotAllowed)
					return true
				}
				return false
			},
			wantReqs: []string{"HEAD ", "GET bytes=0-0"},
		},
		{
			name: "HEAD without length: ranged GET",
			hook: func(_ int, w http.ResponseWriter, r *http.Request) bool {
				if r.Method == http.MethodHead {
					w.Header().Set("Transfer-Encoding", "chunked")
					w.WriteHeader(http.StatusOK)
					return true
				}
				return false
			},
			wantReqs: []string{"HEAD ", "GET bytes=0-0"},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			srv := newFakeRegistry(t, data, tc.hook)
			f := newTestFetcher(t, Config{})
			d := srv.desc()
			d.Size = 0
			b := mustBlob(t, f, srv.ref(), d)
			if b.Size() != int64(len(data)) {
				t.Fatalf("size %d, want %d", b.Size(), len(data))
			}
			var got []string
			for _, r := range srv.requests() {
				got = append(got, r.Method+" "+r.Range)
			}
			if fmt.Sprint(got) != fmt.Sprint(tc.wantReqs) {
				t.Fatalf("requests %q, want %q", got, tc.wantReqs)
			}
		})
	}
}

// TestInvalidateRefetches: a server that returns wrong bytes (with correct
// headers) is caught by the caller's check, as fs checks a chunk against
// its digest; Invalidate drops the bad copy from the caches and the next
// read fetches it again.
func TestInvalidateRefetches(t *testing.T) {
	data := randBytes(8, 256<<10)
	const off, n = 4096, 8192
	want := sha256.Sum256(data[off : off+n])
	verify := func(b []byte) error {
		if sha256.Sum256(b) != want {
			return errors.New("chunk digest mismatch")
		}
		return nil
	}
	tests := []struct {
		name     string
		badUntil int // requests answered with corrupt bytes
		wantBad  bool
	}{
		{name: "wrong bytes once: refetched", badUntil: 1},
		{name: "wrong bytes always", badUntil: 1 << 30, wantBad: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			srv := newFakeRegistry(t, data, func(k int, w http.ResponseWriter, r *http.Request) bool {
				if k > tc.badUntil {
					return false
				}
				a, e := parseRange(t, r.Header.Get("Range"))
				bad := append([]byte(nil), data[a:e]...)
				bad[len(bad)/2] ^= 0xff
				writePartial(w, a, e, int64(len(data)), bad)
				return true
			})
			f := newTestFetcher(t, Config{CacheDir: t.TempDir()})
			b := mustBlob(t, f, srv.ref(), srv.desc())
			var got []byte
			for range 2 {
				raw, err := b.ReadRange(context.Background(), off, n)
				if err != nil {
					t.Fatal(err)
				}
				if got = raw; verify(raw) == nil {
					break
				}
				b.Invalidate(off, n)
				if u := f.CacheUsage(); u.Entries != 0 || u.MemEntries != 0 {
					t.Fatalf("bad bytes left in cache after Invalidate: %+v", u)
				}
			}
			if bad := verify(got) != nil; bad != tc.wantBad {
				t.Fatalf("bytes read bad: %v, want %v", bad, tc.wantBad)
			}
			if tc.wantBad {
				return
			}
			if !bytes.Equal(got, data[off:off+n]) {
				t.Fatal("wrong bytes")
			}
			if r := srv.blobRequests(); r != 2 {
				t.Fatalf("requests %d, want 2", r)
			}
		})
	}
}

func TestReadAt(t *testing.T) {
	data := randBytes(9, 100_000)
	srv := newFakeRegistry(t, data, nil)
	f := newTestFetcher(t, Config{})
	b := mustBlob(t, f, srv.ref(), srv.desc())
	tests := []struct {
		name    string
		off     int64
		n       int
		wantN   int
		wantEOF bool
	}{
		{name: "inside", off: 10, n: 100, wantN: 100},
		{name: "crosses end", off: 99_990, n: 100, wantN: 10, wantEOF: true},
		{name: "at end", off: 100_000, n: 10, wantN: 0, wantEOF: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p := make([]byte, tc.n)
			n, err := b.ReadAt(p, tc.off)
			if n != tc.wantN || (err != nil) != tc.wantEOF {
				t.Fatalf("ReadAt = %d, %v", n, err)
			}
			if !bytes.Equal(p[:n], data[tc.off:tc.off+int64(n)]) {
				t.Fatal("wrong bytes")
			}
		})
	}
}

func TestRangeValidation(t *testing.T) {
	data := randBytes(10, 1000)
	srv := newFakeRegistry(t, data, nil)
	f := newTestFetcher(t, Config{})
	b := mustBlob(t, f, srv.ref(), srv.desc())
	tests := []struct {
		name   string
		off, n int64
	}{
		{"negative offset", -1, 10},
		{"zero length", 0, 0},
		{"past end", 995, 10},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := b.ReadRange(context.Background(), tc.off, tc.n); !errors.Is(err, ErrRangeNotSatisfied) {
				t.Fatalf("err = %v", err)
			}
		})
	}
	if n := srv.blobRequests(); n != 0 {
		t.Fatalf("invalid ranges sent %d requests", n)
	}
}
