package fetcher

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/containerd/containerd/v2/core/remotes/docker"
	"github.com/opencontainers/go-digest"
)

// countingServer is an httptest server that counts its requests.
func countingServer(t *testing.T, h func(n int, w http.ResponseWriter, r *http.Request)) (*httptest.Server, *atomic.Int64) {
	t.Helper()
	var n atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h(int(n.Add(1)), w, r)
	}))
	t.Cleanup(srv.Close)
	return srv, &n
}

func get(t *testing.T, ctx context.Context, rt http.RoundTripper, url string) (*http.Response, error) {
	t.Helper()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	return rt.RoundTrip(req)
}

// TestAuthTransport: credentials are added, a challenge is answered and
// the request sent again, refused credentials and challenges nobody can
// answer fail with ErrUnauthorized, and a marked request's 401 is passed
// through. The authorizer is the fetcher's own (containerd's inside).
func TestAuthTransport(t *testing.T) {
	good := credential{"user", "pass"}
	for _, tc := range []struct {
		name         string
		need         *credential // nil: no auth
		have         credential
		skip         bool
		wantStatus   int   // 0: an error
		wantErr      error // with wantStatus 0
		wantRequests int64
	}{
		{name: "open", wantStatus: 200, wantRequests: 1},
		{name: "challenge answered", need: &good, have: good, wantStatus: 200, wantRequests: 2},
		{name: "credentials refused", need: &good, have: credential{"user", "wrong"}, wantErr: ErrUnauthorized, wantRequests: 3},
		{name: "no credentials for the challenge", need: &good, wantErr: ErrUnauthorized, wantRequests: 1},
		{name: "marked: 401 passed through", need: &good, have: good, skip: true, wantStatus: 401, wantRequests: 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv, n := countingServer(t, func(_ int, w http.ResponseWriter, r *http.Request) {
				if u, p, ok := r.BasicAuth(); tc.need != nil && (!ok || (credential{u, p}) != *tc.need) {
					w.Header().Set("WWW-Authenticate", `Basic realm="test"`)
					w.WriteHeader(http.StatusUnauthorized)
					return
				}
				_, _ = io.WriteString(w, "ok")
			})
			src := &rotatingSource{cur: tc.have}
			rt := &authTransport{auth: newChainAuthorizer(credChain{src}, srv.Client(), nil), next: srv.Client().Transport}
			ctx := context.Background()
			if tc.skip {
				ctx = context.WithValue(ctx, skipChallengeKey{}, true)
			}
			resp, err := get(t, ctx, rt, srv.URL+"/v2/")
			if tc.wantStatus == 0 {
				if !errors.Is(err, tc.wantErr) {
					t.Fatalf("err = %v, want %v", err, tc.wantErr)
				}
			} else {
				if err != nil {
					t.Fatal(err)
				}
				drainClose(resp)
				if resp.StatusCode != tc.wantStatus {
					t.Errorf("status %d, want %d", resp.StatusCode, tc.wantStatus)
				}
			}
			if got := n.Load(); got != tc.wantRequests {
				t.Errorf("%d requests, want %d", got, tc.wantRequests)
			}
		})
	}
}

// TestLocationTransport: a redirect that led to a success is remembered
// and used by the next request; one that expired (an error status of
// blob storage) is forgotten and resolved through the registry again in
// the same round trip; a redirect that failed is not remembered; a
// redirect loop ends.
func TestLocationTransport(t *testing.T) {
	for _, tc := range []struct {
		name string
		// storage answers the n-th request (1-based) to signature sig
		storage      func(n, sig int) int
		loop         bool
		requests     int
		wantStatus   []int
		wantRegistry int64
		wantStorage  int64
	}{
		{name: "remembered", storage: func(int, int) int { return 200 },
			requests: 3, wantStatus: []int{200, 200, 200}, wantRegistry: 1, wantStorage: 3},
		{name: "expired target resolved again", storage: func(n, sig int) int {
			if sig == 1 && n > 1 {
				return 403 // the first URL expires after one use
			}
			return 200
		}, requests: 3, wantStatus: []int{200, 200, 200}, wantRegistry: 2, wantStorage: 4},
		{name: "failed redirect not remembered", storage: func(n, _ int) int {
			if n == 1 {
				return 500
			}
			return 200
		}, requests: 3, wantStatus: []int{500, 200, 200}, wantRegistry: 2, wantStorage: 3},
		{name: "redirect loop", loop: true, requests: 1, wantStatus: []int{0}, wantRegistry: maxRedirects},
	} {
		t.Run(tc.name, func(t *testing.T) {
			storage, sn := countingServer(t, func(n int, w http.ResponseWriter, r *http.Request) {
				var sig int
				fmt.Sscan(r.URL.Query().Get("sig"), &sig)
				w.WriteHeader(tc.storage(n, sig))
			})
			var sigs atomic.Int64
			registry, rn := countingServer(t, func(_ int, w http.ResponseWriter, r *http.Request) {
				if tc.loop {
					http.Redirect(w, r, r.URL.String(), http.StatusTemporaryRedirect)
					return
				}
				http.Redirect(w, r, fmt.Sprintf("%s/blob?sig=%d", storage.URL, sigs.Add(1)), http.StatusTemporaryRedirect)
			})
			client := *registry.Client()
			client.CheckRedirect = stopAfterRedirects
			rt := &locationTransport{next: &redirectTransport{client: &client}}
			for i := range tc.requests {
				resp, err := get(t, context.Background(), rt, registry.URL+"/v2/repo/blobs/x")
				if tc.wantStatus[i] == 0 {
					if err == nil {
						drainClose(resp)
						t.Fatalf("request %d: status %d, want an error", i, resp.StatusCode)
					}
					continue
				}
				if err != nil {
					t.Fatalf("request %d: %v", i, err)
				}
				drainClose(resp)
				if resp.StatusCode != tc.wantStatus[i] {
					t.Errorf("request %d: status %d, want %d", i, resp.StatusCode, tc.wantStatus[i])
				}
			}
			if rn.Load() != tc.wantRegistry || sn.Load() != tc.wantStorage {
				t.Errorf("registry %d, storage %d requests; want %d, %d", rn.Load(), sn.Load(), tc.wantRegistry, tc.wantStorage)
			}
		})
	}
}

// TestStallTransport: under an attempt's watchdog, a body that goes quiet
// and headers that do not come fail the attempt with its bound; a body
// that keeps coming does not; a request outside an attempt is not watched.
// The servers that stall wait for the client to give up, so the outcome
// does not depend on timing.
func TestStallTransport(t *testing.T) {
	const body = "0123456789"
	for _, tc := range []struct {
		name      string
		attempt   bool // under startAttempt
		stream    bool // a stream's attempt: headers bounded by RequestTimeout
		stallHead bool // no headers until the client gives up
		stallBody bool // headers and half the body, then nothing
		wantLimit string
	}{
		{name: "steady body", attempt: true, stream: true},
		{name: "body stalls", attempt: true, stream: true, stallBody: true, wantLimit: "response stalled"},
		{name: "headers late", attempt: true, stream: true, stallHead: true, wantLimit: "no response headers"},
		{name: "bounded attempt: request timeout", attempt: true, stallHead: true, wantLimit: "request timeout"},
		{name: "no attempt: not watched"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv, _ := countingServer(t, func(_ int, w http.ResponseWriter, r *http.Request) {
				if tc.stallHead {
					<-r.Context().Done()
					return
				}
				w.Header().Set("Content-Length", fmt.Sprint(len(body)))
				if tc.stallBody {
					_, _ = io.WriteString(w, body[:5])
					w.(http.Flusher).Flush()
					<-r.Context().Done()
					return
				}
				_, _ = io.WriteString(w, body)
			})
			f := &Fetcher{cfg: Config{RequestTimeout: 100 * time.Millisecond, StallTimeout: 100 * time.Millisecond}}
			if tc.wantLimit == "" {
				f.cfg.RequestTimeout, f.cfg.StallTimeout = time.Minute, time.Minute
			}
			ctx, end := context.Background(), func() error { return nil }
			if tc.attempt {
				ctx, end = f.startAttempt(ctx, tc.stream)
			}
			rt := &stallTransport{next: srv.Client().Transport}
			var got []byte
			resp, err := get(t, ctx, rt, srv.URL)
			if err == nil {
				if _, watched := resp.Body.(*watchedBody); watched != tc.attempt {
					t.Errorf("body watched: %v, want %v", watched, tc.attempt)
				}
				got, err = io.ReadAll(resp.Body)
				resp.Body.Close()
			}
			limit := end()
			if tc.wantLimit == "" {
				if err != nil || string(got) != body || limit != nil {
					t.Fatalf("body %q, err %v, limit %v; want the whole body", got, err, limit)
				}
				return
			}
			if err == nil || limit == nil || !strings.Contains(limit.Error(), tc.wantLimit) {
				t.Fatalf("err %v, limit %v; want a failure bounded by %q", err, limit, tc.wantLimit)
			}
		})
	}
}

// TestMeteredTransport: requests and body bytes are counted per host, and
// the host's slot is released when the body ends or is closed early, so
// that a limit of one admits the next request.
func TestMeteredTransport(t *testing.T) {
	const body = "0123456789"
	for _, tc := range []struct {
		name      string
		readAll   bool
		wantBytes int64
	}{
		{name: "read to the end", readAll: true, wantBytes: 3 * int64(len(body))},
		{name: "closed unread", wantBytes: 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv, _ := countingServer(t, func(_ int, w http.ResponseWriter, _ *http.Request) {
				_, _ = io.WriteString(w, body)
			})
			f := &Fetcher{cfg: Config{MaxConnsPerHost: 1}, hstate: map[string]*hostState{}}
			rt := &meteredTransport{base: srv.Client().Transport, f: f}
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			for range 3 {
				resp, err := get(t, ctx, rt, srv.URL)
				if err != nil {
					t.Fatal(err) // the slot of an earlier request was not released
				}
				if tc.readAll {
					_, _ = io.ReadAll(resp.Body)
				}
				resp.Body.Close()
			}
			st := f.Stats()[strings.TrimPrefix(srv.URL, "http://")]
			if st.Requests != 3 || st.Bytes != tc.wantBytes {
				t.Errorf("stats %+v, want 3 requests and %d bytes", st, tc.wantBytes)
			}
		})
	}
}

// TestBlobTransportExpired401: through the composed stack, a remembered
// storage URL that answers 401 with an auth challenge (as some storage
// does once a pre-signed URL expires) is re-resolved through the
// registry, not handed to the authorizer, which has no credentials for it.
func TestBlobTransportExpired401(t *testing.T) {
	var expired atomic.Bool
	storage, sn := countingServer(t, func(_ int, w http.ResponseWriter, r *http.Request) {
		if expired.Load() && r.URL.Query().Get("sig") == "1" {
			w.Header().Set("WWW-Authenticate", `Basic realm="storage"`)
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		_, _ = io.WriteString(w, "blob")
	})
	var sigs atomic.Int64
	registry, rn := countingServer(t, func(_ int, w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, fmt.Sprintf("%s/blob?sig=%d", storage.URL, sigs.Add(1)), http.StatusTemporaryRedirect)
	})
	rt := hostTransport(docker.RegistryHost{
		Client:     registry.Client(),
		Authorizer: newChainAuthorizer(credChain{&rotatingSource{}}, registry.Client(), nil),
	})
	for i := range 2 {
		if i == 1 {
			expired.Store(true)
		}
		resp, err := get(t, context.Background(), rt, registry.URL+"/v2/repo/blobs/x")
		if err != nil {
			t.Fatalf("request %d: %v", i, err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || string(b) != "blob" {
			t.Fatalf("request %d: status %d %q, want 200 \"blob\"", i, resp.StatusCode, b)
		}
	}
	if rn.Load() != 2 || sn.Load() != 3 {
		t.Errorf("registry %d, storage %d requests; want 2, 3", rn.Load(), sn.Load())
	}
}

// TestReferrersAuth: the referrers API goes through the same auth layer
// as blob reads: a challenge is answered with the sources' credentials;
// refused ones fail with ErrUnauthorized.
func TestReferrersAuth(t *testing.T) {
	good := credential{"user", "pass"}
	const index = `{"schemaVersion":2,"manifests":[]}`
	subject := digest.FromString("subject")
	for _, tc := range []struct {
		name    string
		have    credential
		wantErr error
	}{
		{name: "challenge answered", have: good},
		{name: "credentials refused", have: credential{"user", "wrong"}, wantErr: ErrUnauthorized},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv, _ := countingServer(t, func(_ int, w http.ResponseWriter, r *http.Request) {
				if u, p, ok := r.BasicAuth(); !ok || (credential{u, p}) != good {
					w.Header().Set("WWW-Authenticate", `Basic realm="test"`)
					w.WriteHeader(http.StatusUnauthorized)
					return
				}
				if r.URL.Path != "/v2/test/repo/referrers/"+subject.String() {
					http.NotFound(w, r)
					return
				}
				_, _ = io.WriteString(w, index)
			})
			f := newTestFetcher(t, Config{Credentials: []CredentialSource{&rotatingSource{cur: tc.have}}})
			ref := strings.TrimPrefix(srv.URL, "http://") + "/test/repo:latest"
			b, err := f.Referrers(context.Background(), ref, subject, "")
			if !errors.Is(err, tc.wantErr) || (err == nil && string(b) != index) {
				t.Fatalf("Referrers = %q, %v; want %q, %v", b, err, index, tc.wantErr)
			}
		})
	}
}
