package remote

import (
	"context"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/lazysnap/lazysnap/fetcher"
	"github.com/lazysnap/lazysnap/internal/testenv"
	"github.com/lazysnap/lazysnap/internal/testenv/registry"
	"github.com/lazysnap/lazysnap/internal/testtar"
	"github.com/lazysnap/lazysnap/snapshotter"
)

// lookupCounter is a reverse proxy in front of a real registry that
// counts the requests of SOCI v1 index lookups (the referrers API and the
// referrers tag schema's tags, sha256-<hex>) and, while fail is set,
// answers them 503.
type lookupCounter struct {
	requests atomic.Int64
	fail     atomic.Bool
}

// startCountingRegistry starts a registry behind a lookupCounter and a
// fetcher (no retries) that reaches it through the counter.
func startCountingRegistry(t *testing.T) (*registry.Registry, *fetcher.Fetcher, *lookupCounter) {
	t.Helper()
	c := &lookupCounter{}
	r, f := startRegistryBehind(t, func(w http.ResponseWriter, req *http.Request, next http.Handler) {
		if strings.Contains(req.URL.Path, "/referrers/") || strings.Contains(req.URL.Path, "/manifests/sha256-") {
			c.requests.Add(1)
			if c.fail.Load() {
				http.Error(w, "unavailable", http.StatusServiceUnavailable)
				return
			}
		}
		next.ServeHTTP(w, req)
	})
	return r, f, c
}

// startRegistryBehind starts a registry behind a reverse proxy whose
// requests go through front (next forwards them), and a fetcher (no
// retries) that reaches it through the proxy.
func startRegistryBehind(t *testing.T, front func(w http.ResponseWriter, req *http.Request, next http.Handler)) (*registry.Registry, *fetcher.Fetcher) {
	t.Helper()
	testenv.NeedFUSE(t)
	r := registry.Start(t, registry.Options{})
	u, err := url.Parse(r.URL())
	if err != nil {
		t.Fatal(err)
	}
	rp := httputil.NewSingleHostReverseProxy(u)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) { front(w, req, rp) }))
	t.Cleanup(srv.Close)
	hosts := t.TempDir()
	if _, err := registry.WriteHostsConfig(hosts, r.Host, registry.Endpoint{URL: srv.URL}); err != nil {
		t.Fatal(err)
	}
	f, err := fetcher.New(fetcher.Config{HostsDir: hosts, Retries: -1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return r, f
}

// TestSociLookupTagSchemaBesideReferrers: the referrers tag schema is
// asked beside the referrers API, not after its 404, so that a registry
// without the API costs the lookup (which a layer that is not lazy waits
// for before its line-rate pull) one round trip, not two. Here the
// referrers answer waits until the tag's request has arrived: asked one
// after the other, the lookup would end only with its context.
func TestSociLookupTagSchemaBesideReferrers(t *testing.T) {
	tagAsked := make(chan struct{})
	var once sync.Once
	r, f := startRegistryBehind(t, func(w http.ResponseWriter, req *http.Request, next http.Handler) {
		switch {
		case strings.Contains(req.URL.Path, "/manifests/sha256-"):
			once.Do(func() { close(tagAsked) })
		case strings.Contains(req.URL.Path, "/referrers/"):
			select {
			case <-tagAsked:
			case <-req.Context().Done():
				return
			}
		}
		next.ServeHTTP(w, req)
	})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	img, err := r.PushImage(ctx, "lookup/beside", "v1", gzipped(testtar.Synthetic(64<<10)))
	if err != nil {
		t.Fatal(err)
	}
	lk := NewRegistrySource(f).(fetcherSource).sociIndex(ctx, img.Ref, img.Manifest, nil, nil)
	if lk.idx != nil || lk.why != "the image has no SOCI index" {
		t.Fatalf("lookup: index %v, why %q, want no index", lk.idx != nil, lk.why)
	}
}

// TestSociLookupOncePerPull: the SOCI index lookup of an image with none
// (the referrers API, then its tag schema: two requests per repository
// asked) runs once for the Mounts that find its layers not lazy and the
// line-rate Pulls that follow them, and a Pull alone (of a layer whose
// labels list none above it to spool) looks nothing up.
func TestSociLookupOncePerPull(t *testing.T) {
	r, f, c := startCountingRegistry(t)
	ctx := context.Background()
	img, err := r.PushImage(ctx, "lookup/plain", "v1", gzipped(testtar.Synthetic(256<<10)), gzipped(testtar.Synthetic(128<<10)))
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name  string
		opts  []SourceOption
		mount bool  // Mount each layer before its Pull, as the snapshotter does
		want  int64 // lookup requests
	}{
		{"Mount and Pull, nothing trusted", nil, true, 2},
		{"Mount and Pull, a trusted repository", []SourceOption{WithTrustedSociRepositories(r.Host + "/elsewhere")}, true, 4},
		{"Pull alone", nil, false, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := c.requests.Load()
			fs := New(NewRegistrySource(f, tc.opts...), Options{Root: t.TempDir()})
			t.Cleanup(func() { fs.Close() })
			for i, l := range img.Layers {
				labels := layerLabels(img.Ref, img.Layers, i)
				if !tc.mount {
					// no layers above listed: their spools would look
					labels = sociLabels(img.Ref, l.Digest)
				}
				if tc.mount {
					if err := fs.Mount(ctx, t.TempDir(), labels); err == nil || !strings.Contains(err.Error(), "no SOCI index") {
						t.Fatalf("Mount %s: %v, want not lazy", l.Digest, err)
					}
				}
				if _, err := fs.Pull(ctx, snapshotter.PullRequest{Dir: t.TempDir(), Labels: labels, NotLazy: "not lazy"}); err != nil {
					t.Fatal(err)
				}
			}
			if n := c.requests.Load() - before; n != tc.want {
				t.Fatalf("%d lookup requests, want %d", n, tc.want)
			}
		})
	}
}

// TestSociLookupCache: what the referrers said of an image's SOCI index,
// none included, is believed for sociReferrersTTL, then looked up again
// (a node may have published one since); a lookup that failed is not
// remembered as "no index".
func TestSociLookupCache(t *testing.T) {
	r, f, c := startCountingRegistry(t)
	ctx := context.Background()
	img, err := r.PushImage(ctx, "lookup/cache", "v1", gzipped(testtar.Synthetic(64<<10)))
	if err != nil {
		t.Fatal(err)
	}
	s := NewRegistrySource(f).(fetcherSource)
	now := time.Now()
	s.soci.now = func() time.Time { return now }
	for _, step := range []struct {
		name      string
		after     time.Duration // the clock moves on by this first
		fail      bool          // the lookup's requests fail
		wantLook  bool          // a lookup is made
		wantWhyIn string
	}{
		{"first: looked up", 0, false, true, "the image has no SOCI index"},
		{"within the lifetime: cached", sociReferrersTTL / 2, false, false, "the image has no SOCI index"},
		{"expired: looked up again", sociReferrersTTL, false, true, "the image has no SOCI index"},
		{"expired, registry failing: the failure", sociReferrersTTL, true, true, "SOCI index lookup: "},
		{"a failure is not cached", 0, false, true, "the image has no SOCI index"},
		{"after it: cached", time.Second, false, false, "the image has no SOCI index"},
	} {
		now = now.Add(step.after)
		c.fail.Store(step.fail)
		before := c.requests.Load()
		lk := s.sociIndex(ctx, img.Ref, img.Manifest, nil, nil)
		if looked := c.requests.Load() > before; looked != step.wantLook || lk.idx != nil || !strings.Contains(lk.why, step.wantWhyIn) {
			t.Fatalf("%s: looked up %v (want %v), index %v, why %q (want %q in it)", step.name, looked, step.wantLook, lk.idx != nil, lk.why, step.wantWhyIn)
		}
	}
}
