package fetcher

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// rotatingSource is a CredentialSource whose answer the test changes: cur
// normally, fresh once asked with refresh (which then becomes cur).
type rotatingSource struct {
	mu        sync.Mutex
	cur       credential
	fresh     *credential
	refreshes int
	refs      []string
}

func (s *rotatingSource) Credentials(_ context.Context, ref, _ string, refresh bool) (string, string, bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.refs = append(s.refs, ref)
	if refresh {
		s.refreshes++
		if s.fresh != nil {
			s.cur, s.fresh = *s.fresh, nil
		}
	}
	return s.cur.user, s.cur.secret, s.cur != credential{}, nil
}

func (s *rotatingSource) set(c credential) {
	s.mu.Lock()
	s.cur = c
	s.mu.Unlock()
}

func (s *rotatingSource) refreshCount() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.refreshes
}

// basicGate makes srv demand basic auth with one of the accepted
// credentials.
func basicGate(srv *fakeRegistry, accepted ...credential) {
	srv.mu.Lock()
	defer srv.mu.Unlock()
	srv.hook = func(_ int, w http.ResponseWriter, r *http.Request) bool {
		u, p, ok := r.BasicAuth()
		if ok && slices.Contains(accepted, credential{u, p}) {
			return false
		}
		w.Header().Set("WWW-Authenticate", `Basic realm="fake"`)
		w.WriteHeader(http.StatusUnauthorized)
		return true
	}
}

// TestCredentialRotation: the credentials a source gives are looked up per
// request (a rotation is used by the next read); credentials the registry
// refuses are asked for once more with refresh before the read fails.
func TestCredentialRotation(t *testing.T) {
	data := randBytes(41, 64<<10)
	alice, bob := credential{"alice", "one"}, credential{"alice", "two"}
	tests := []struct {
		name          string
		bearer        bool
		accepted      []credential
		cur           credential
		fresh         *credential
		wantErr       error
		wantRefreshes int
	}{
		{name: "basic: current credentials", accepted: []credential{alice}, cur: alice},
		{name: "basic: refused, refreshed", accepted: []credential{bob}, cur: alice, fresh: &bob, wantRefreshes: 1},
		{name: "basic: refused, refresh gives the same", accepted: []credential{bob}, cur: alice, wantErr: ErrUnauthorized, wantRefreshes: 1},
		{name: "basic: none", accepted: []credential{bob}, wantErr: ErrUnauthorized},
		{name: "bearer: refused by the token server, refreshed", bearer: true, accepted: []credential{bob}, cur: alice, fresh: &bob, wantRefreshes: 1},
		{name: "bearer: refused, refresh gives the same", bearer: true, accepted: []credential{bob}, cur: alice, wantErr: ErrUnauthorized, wantRefreshes: 1},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			srv := newFakeRegistry(t, data, nil)
			if tc.bearer {
				ts := newTokenServer(t, tc.accepted[0].user, tc.accepted[0].secret, "tok-1")
				srv.hook = func(_ int, w http.ResponseWriter, r *http.Request) bool {
					if r.Header.Get("Authorization") == "Bearer tok-1" {
						return false
					}
					w.Header().Set("WWW-Authenticate", fmt.Sprintf(`Bearer realm=%q,service="fake"`, ts.URL+"/token"))
					w.WriteHeader(http.StatusUnauthorized)
					return true
				}
			} else {
				basicGate(srv, tc.accepted...)
			}
			src := &rotatingSource{cur: tc.cur, fresh: tc.fresh}
			f := newTestFetcher(t, Config{Credentials: []CredentialSource{src}, Retries: 1})
			ctx := context.Background()
			b, err := f.Blob(ctx, srv.ref(), srv.desc())
			if err != nil {
				t.Fatal(err)
			}
			got, err := b.ReadRange(ctx, 0, 100)
			if tc.wantErr != nil {
				if !errors.Is(err, tc.wantErr) {
					t.Fatalf("err = %v, want %v", err, tc.wantErr)
				}
				t.Logf("error: %v", err)
			} else if err != nil || !bytes.Equal(got, data[:100]) {
				t.Fatalf("ReadRange: %v", err)
			}
			if n := src.refreshCount(); n != tc.wantRefreshes {
				t.Fatalf("refreshes %d, want %d", n, tc.wantRefreshes)
			}
			if n := srv.blobRequests(); n > 4 {
				t.Fatalf("%d blob requests for one read", n)
			}
			for _, r := range src.refs {
				if r != srv.ref() {
					t.Fatalf("source asked for ref %q, want %q", r, srv.ref())
				}
			}
		})
	}
}

// TestCredentialRotationNextRead: a source that changes its answer (a new
// pull's auth, a plugin's new token) is used by the very next request,
// although the old credentials still work.
func TestCredentialRotationNextRead(t *testing.T) {
	data := randBytes(42, 64<<10)
	alice, bob := credential{"alice", "one"}, credential{"bob", "two"}
	srv := newFakeRegistry(t, data, nil)
	basicGate(srv, alice, bob)
	src := &rotatingSource{cur: alice}
	f := newTestFetcher(t, Config{Credentials: []CredentialSource{src}, MemCacheMaxBytes: -1})
	ctx := context.Background()
	b, err := f.Blob(ctx, srv.ref(), srv.desc())
	if err != nil {
		t.Fatal(err)
	}
	lastAuth := func() string {
		reqs := srv.requests()
		return reqs[len(reqs)-1].Auth
	}
	if _, err := b.ReadRange(ctx, 0, 100); err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(lastAuth(), "Basic ") || lastAuth() != basicHeader(alice) {
		t.Fatalf("first read sent %q", lastAuth())
	}
	src.set(bob)
	if _, err := b.ReadRange(ctx, 100, 100); err != nil {
		t.Fatal(err)
	}
	if lastAuth() != basicHeader(bob) {
		t.Fatalf("read after the rotation sent %q, want bob's", lastAuth())
	}
}

func basicHeader(c credential) string { return "Basic " + basicAuth(c.user, c.secret) }

// TestPullAuths: the auth of an image's pull is used for that image's
// repository only; a reverted pull leaves the previous auth; a pull
// without auth replaces it with none.
func TestPullAuths(t *testing.T) {
	data := randBytes(43, 64<<10)
	srv := newFakeRegistry(t, data, nil)
	alice := credential{"alice", "one"}
	basicGate(srv, alice)
	pa := NewPullAuths()
	f := newTestFetcher(t, Config{Credentials: []CredentialSource{pa}, Retries: 1, MemCacheMaxBytes: -1, CacheDir: ""})
	ctx := context.Background()
	read := func(ref string) error {
		b, err := f.Blob(ctx, ref, srv.desc())
		if err != nil {
			return err
		}
		_, err = b.ReadRange(ctx, 0, 10)
		return err
	}
	image := srv.host() + "/test/repo:v1"
	if err := read(srv.ref()); !errors.Is(err, ErrUnauthorized) {
		t.Fatalf("before any pull: %v", err)
	}
	gen, err := pa.Set(image, PullAuth{Username: "alice", Password: "one"})
	if err != nil {
		t.Fatal(err)
	}
	// another tag of the same repository, and the same by digest
	if err := read(srv.ref()); err != nil {
		t.Fatalf("after the pull: %v", err)
	}
	if err := read(srv.host() + "/test/repo@" + srv.dgst.String()); err != nil {
		t.Fatalf("by digest: %v", err)
	}
	if err := read(srv.host() + "/other/repo:v1"); !errors.Is(err, ErrUnauthorized) {
		t.Fatalf("another repository: %v", err)
	}
	// a pull with a wrong secret, reverted: the good auth is back
	bad, err := pa.Set(image, PullAuth{Auth: basicAuth("alice", "wrong")})
	if err != nil {
		t.Fatal(err)
	}
	if err := read(srv.ref()); !errors.Is(err, ErrUnauthorized) {
		t.Fatalf("with the wrong secret: %v", err)
	}
	if err := pa.Revert(image, bad); err != nil {
		t.Fatal(err)
	}
	if err := read(srv.ref()); err != nil {
		t.Fatalf("after the revert: %v", err)
	}
	// reverting a generation a later pull replaced does nothing
	if _, err := pa.Set(image, PullAuth{Username: "alice", Password: "one"}); err != nil {
		t.Fatal(err)
	}
	if err := pa.Revert(image, gen); err != nil || len(pa.Repositories()) != 1 || pa.Repositories()[0] != srv.host()+"/test/repo" {
		t.Fatalf("stale revert: %v, auths for %q", err, pa.Repositories())
	}
	if err := read(srv.ref()); err != nil {
		t.Fatalf("after a stale revert: %v", err)
	}
	// server_address names another registry: not sent here
	if _, err := pa.Set(image, PullAuth{Username: "alice", Password: "one", ServerAddress: "https://elsewhere.example"}); err != nil {
		t.Fatal(err)
	}
	if err := read(srv.ref()); !errors.Is(err, ErrUnauthorized) {
		t.Fatalf("auth for another server: %v", err)
	}
	if _, err := pa.Set(image, PullAuth{}); err != nil || len(pa.Repositories()) != 0 {
		t.Fatalf("anonymous pull: %v, auths for %q", err, pa.Repositories())
	}
	if _, err := pa.Set(image, PullAuth{Auth: "%%%"}); !errors.Is(err, ErrInvalid) {
		t.Fatalf("malformed auth: %v", err)
	}
}

// TestTokenServerRecovers: a token request that fails (the token server
// answers 503) fails that read only: containerd's authorizer would keep
// the failure for the scope for good; the next read gets a token. The
// failure is not a refusal, so the sources are not asked to refresh.
func TestTokenServerRecovers(t *testing.T) {
	data := randBytes(44, 64<<10)
	var mu sync.Mutex
	tokenCalls := 0
	ts := newTokenServer(t, "alice", "one", "tok-1")
	front := newFakeRegistry(t, nil, nil) // the token endpoint, failing once
	front.Config.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		tokenCalls++
		n := tokenCalls
		mu.Unlock()
		if n == 1 {
			http.Error(w, "down for a moment", http.StatusServiceUnavailable)
			return
		}
		ts.Config.Handler.ServeHTTP(w, r)
	})
	srv := newFakeRegistry(t, data, func(_ int, w http.ResponseWriter, r *http.Request) bool {
		if r.Header.Get("Authorization") == "Bearer tok-1" {
			return false
		}
		w.Header().Set("WWW-Authenticate", fmt.Sprintf(`Bearer realm=%q,service="fake"`, front.URL+"/token"))
		w.WriteHeader(http.StatusUnauthorized)
		return true
	})
	src := &rotatingSource{cur: credential{"alice", "one"}}
	f := newTestFetcher(t, Config{Credentials: []CredentialSource{src}, Retries: 1, MemCacheMaxBytes: -1})
	ctx := context.Background()
	b, err := f.Blob(ctx, srv.ref(), srv.desc())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.ReadRange(ctx, 0, 100); err == nil {
		t.Fatal("the read whose token request failed succeeded")
	}
	if got, err := b.ReadRange(ctx, 0, 100); err != nil || !bytes.Equal(got, data[:100]) {
		t.Fatalf("the next read: %v", err)
	}
	if n := src.refreshCount(); n != 0 {
		t.Fatalf("%d refreshes for a token server that was down", n)
	}
}

// BenchmarkAuthorize is the cost the credential chain adds to every
// request: PullAuths holding 1,000 repositories, then a Docker config
// (stat per call), then containerd's basic authorizer.
func BenchmarkAuthorize(b *testing.B) {
	pa := NewPullAuths()
	for i := range 1000 {
		if _, err := pa.Set(fmt.Sprintf("reg.example:5000/team/app-%d:v1", i), PullAuth{Username: "u", Password: fmt.Sprint(i)}); err != nil {
			b.Fatal(err)
		}
	}
	cfg := writeDockerConfig(b, `{"auths":{"other.example":{"auth":"`+basicAuth("x", "y")+`"}}}`)
	a := newChainAuthorizer(credChain{pa, &dockerSource{d: dockerCredentials{path: cfg}}}, http.DefaultClient, nil)
	ctx := withRef(context.Background(), "reg.example:5000/team/app-500:v1")
	req, _ := http.NewRequest(http.MethodGet, "http://reg.example:5000/v2/team/app-500/blobs/sha256:00", nil)
	challenge := &http.Response{StatusCode: http.StatusUnauthorized, Request: req, Header: http.Header{"Www-Authenticate": {`Basic realm="x"`}}}
	if err := a.AddResponses(ctx, []*http.Response{challenge}); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		req.Header.Del("Authorization")
		if err := a.Authorize(ctx, req); err != nil || req.Header.Get("Authorization") == "" {
			b.Fatal(err)
		}
	}
}

// TestBrokenHelperNoAuthNeeded: a Docker credential helper that fails does
// not fail reads from a registry that asks for no credentials, and is not
// run for every request.
func TestBrokenHelperNoAuthNeeded(t *testing.T) {
	runs := filepath.Join(t.TempDir(), "runs")
	installCredentialHelper(t, "broken", "#!/bin/sh\necho run >> "+runs+"\necho 'helper exploded' >&2\nexit 1\n")
	data := randBytes(45, 64<<10)
	srv := newFakeRegistry(t, data, nil)
	f := newTestFetcher(t, Config{DockerConfigPath: writeDockerConfig(t, `{"credsStore":"broken"}`), MemCacheMaxBytes: -1})
	// a clock that stands still: the requests are all within FailureBackoff
	still := time.Now()
	f.creds[len(f.creds)-1].(*dockerSource).now = func() time.Time { return still }
	ctx := context.Background()
	b, err := f.Blob(ctx, srv.ref(), srv.desc())
	if err != nil {
		t.Fatal(err)
	}
	for i := range 5 {
		if got, err := b.ReadRange(ctx, int64(i)*100, 100); err != nil || !bytes.Equal(got, data[i*100:(i+1)*100]) {
			t.Fatalf("read %d: %v", i, err)
		}
	}
	out, _ := os.ReadFile(runs)
	if n := strings.Count(string(out), "run"); n != 1 {
		t.Fatalf("the failing helper ran %d times for 6 requests, want once (FailureBackoff)", n)
	}
}
