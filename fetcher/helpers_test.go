package fetcher

import (
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

func randBytes(seed uint64, n int) []byte {
	b := make([]byte, n)
	var s [32]byte
	for i := range 8 {
		s[i] = byte(seed >> (8 * i))
	}
	_, _ = rand.NewChaCha8(s).Read(b)
	return b
}

// fakeRequest is what a fake server saw.
type fakeRequest struct {
	Method, Path, Range, Auth string
}

// fakeRegistry is an httptest registry front serving one blob under any
// repository, for fault injection. hook, when set, may handle a request
// itself (return true); n is the 1-based number of the blob request.
type fakeRegistry struct {
	*httptest.Server
	data []byte
	dgst digest.Digest

	mu    sync.Mutex
	reqs  []fakeRequest
	blobN int
	hook  func(n int, w http.ResponseWriter, r *http.Request) bool
}

func newFakeRegistry(t testing.TB, data []byte, hook func(n int, w http.ResponseWriter, r *http.Request) bool) *fakeRegistry {
	t.Helper()
	s := &fakeRegistry{data: data, dgst: digest.FromBytes(data), hook: hook}
	s.Server = httptest.NewServer(http.HandlerFunc(s.serve))
	t.Cleanup(s.Close)
	return s
}

func (s *fakeRegistry) serve(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	s.reqs = append(s.reqs, fakeRequest{r.Method, r.URL.Path, r.Header.Get("Range"), r.Header.Get("Authorization")})
	isBlob := strings.HasSuffix(r.URL.Path, "/blobs/"+s.dgst.String())
	if isBlob {
		s.blobN++
	}
	n, hook := s.blobN, s.hook
	s.mu.Unlock()
	if r.URL.Path == "/v2/" {
		w.WriteHeader(http.StatusOK)
		return
	}
	if !isBlob {
		http.NotFound(w, r)
		return
	}
	if hook != nil && hook(n, w, r) {
		return
	}
	s.serveBlob(w, r)
}

func (s *fakeRegistry) serveBlob(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "application/octet-stream")
	http.ServeContent(w, r, "", time.Time{}, bytes.NewReader(s.data))
}

func (s *fakeRegistry) host() string { return strings.TrimPrefix(s.URL, "http://") }

func (s *fakeRegistry) ref() string { return s.host() + "/test/repo:latest" }

func (s *fakeRegistry) desc() ocispec.Descriptor {
	return ocispec.Descriptor{MediaType: ocispec.MediaTypeImageLayerGzip, Digest: s.dgst, Size: int64(len(s.data))}
}

// blobRequests is the number of blob requests seen.
func (s *fakeRegistry) blobRequests() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.blobN
}

func (s *fakeRegistry) requests() []fakeRequest {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]fakeRequest(nil), s.reqs...)
}

// fastConfig is a Config with short delays for tests.
func fastConfig(cfg Config) Config {
	if cfg.RetryBaseDelay == 0 {
		cfg.RetryBaseDelay = 5 * time.Millisecond
	}
	if cfg.RequestTimeout == 0 {
		cfg.RequestTimeout = 5 * time.Second
	}
	return cfg
}

func newTestFetcher(t testing.TB, cfg Config) *Fetcher {
	t.Helper()
	f, err := New(fastConfig(cfg))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = f.Close() })
	return f
}

func mustBlob(t testing.TB, f *Fetcher, ref string, desc ocispec.Descriptor) *Blob {
	t.Helper()
	b, err := f.Blob(context.Background(), ref, desc)
	if err != nil {
		t.Fatalf("Blob: %v", err)
	}
	return b
}

// resetConn aborts the connection with a TCP RST.
func resetConn(w http.ResponseWriter) {
	c, _, err := http.NewResponseController(w).Hijack()
	if err != nil {
		panic(err)
	}
	if tc, ok := c.(*net.TCPConn); ok {
		_ = tc.SetLinger(0)
	}
	_ = c.Close()
}

// parseRange parses a single "bytes=a-b" header.
func parseRange(t testing.TB, h string) (int64, int64) {
	t.Helper()
	r, _, err := parseContentRange("bytes " + strings.TrimPrefix(h, "bytes=") + "/*")
	if err != nil {
		t.Fatalf("range header %q: %v", h, err)
	}
	return r.Off, r.End()
}

// readResult is the outcome of a ReadRange run by goReadRange.
type readResult struct {
	data []byte
	err  error
}

// goReadRange runs b.ReadRange(ctx, off, n) in a goroutine; its result
// comes on the channel.
func goReadRange(ctx context.Context, b *Blob, off, n int64) <-chan readResult {
	done := make(chan readResult, 1)
	go func() {
		d, err := b.ReadRange(ctx, off, n)
		done <- readResult{d, err}
	}()
	return done
}

// cutHalfwayAt is a fakeRegistry hook: the blob request numbered k sends
// half of the range asked and then resets the connection.
func cutHalfwayAt(t testing.TB, data []byte, k int) func(int, http.ResponseWriter, *http.Request) bool {
	return func(n int, w http.ResponseWriter, r *http.Request) bool {
		if n != k {
			return false
		}
		a, e := parseRange(t, r.Header.Get("Range"))
		w.Header().Set("Content-Range", fmt.Sprintf("bytes %d-%d/%d", a, e-1, len(data)))
		w.Header().Set("Content-Length", strconv.FormatInt(e-a, 10))
		w.WriteHeader(http.StatusPartialContent)
		_, _ = w.Write(data[a : a+(e-a)/2])
		w.(http.Flusher).Flush()
		resetConn(w)
		return true
	}
}
