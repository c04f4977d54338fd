package fetcher

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// tokenServer is a Docker registry token service: GET with basic auth or
// POST with an OAuth2 password grant.
type tokenServer struct {
	*httptest.Server
	user, pass, token string

	mu     sync.Mutex
	scopes []string
	grants []string
}

func newTokenServer(t *testing.T, user, pass, token string) *tokenServer {
	ts := &tokenServer{user: user, pass: pass, token: token}
	ts.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var u, p, scope, grant string
		switch r.Method {
		case http.MethodGet:
			u, p, _ = r.BasicAuth()
			scope, grant = r.URL.Query().Get("scope"), "basic"
		case http.MethodPost:
			_ = r.ParseForm()
			u, p = r.PostForm.Get("username"), r.PostForm.Get("password")
			scope, grant = r.PostForm.Get("scope"), "oauth-"+r.PostForm.Get("grant_type")
		}
		ts.mu.Lock()
		ts.scopes = append(ts.scopes, scope)
		ts.grants = append(ts.grants, grant)
		ts.mu.Unlock()
		if u != ts.user || p != ts.pass {
			http.Error(w, `{"errors":[{"code":"UNAUTHORIZED"}]}`, http.StatusUnauthorized)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(map[string]any{"token": ts.token, "access_token": ts.token, "expires_in": 300})
	}))
	t.Cleanup(ts.Close)
	return ts
}

func (ts *tokenServer) calls() ([]string, []string) {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	return append([]string(nil), ts.scopes...), append([]string(nil), ts.grants...)
}

// TestBearerTokenAuth runs containerd's authorizer against an httptest
// token server and a registry front that demands a bearer token.
func TestBearerTokenAuth(t *testing.T) {
	data := randBytes(40, 512<<10)
	tests := []struct {
		name       string
		user, pass string
		wantErr    error
	}{
		{name: "valid credentials", user: "alice", pass: "wonderland"},
		{name: "wrong password", user: "alice", pass: "nope", wantErr: ErrUnauthorized},
		{name: "no credentials", wantErr: ErrUnauthorized},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ts := newTokenServer(t, "alice", "wonderland", "tok-123")
			srv := newFakeRegistry(t, data, nil)
			srv.hook = func(_ int, w http.ResponseWriter, r *http.Request) bool {
				if r.Header.Get("Authorization") == "Bearer tok-123" {
					return false
				}
				w.Header().Set("WWW-Authenticate", fmt.Sprintf(`Bearer realm=%q,service="fake-registry",scope="repository:test/repo:pull"`, ts.URL+"/token"))
				w.WriteHeader(http.StatusUnauthorized)
				return true
			}
			cfg := Config{Retries: 1}
			if tc.user != "" {
				cfg.DockerConfigPath = writeDockerConfig(t, fmt.Sprintf(`{"auths":{%q:{"auth":%q}}}`, srv.host(), basicAuth(tc.user, tc.pass)))
			}
			f := newTestFetcher(t, cfg)
			ctx := context.Background()
			d := srv.desc()
			d.Size = 0 // HEAD goes through auth too
			b, err := f.Blob(ctx, srv.ref(), d)
			if tc.wantErr != nil {
				if !errors.Is(err, tc.wantErr) {
					t.Fatalf("err = %v, want %v", err, tc.wantErr)
				}
				t.Logf("error: %v", err)
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			for _, r := range []Range{{0, 100}, {1000, 100}, {200_000, 5000}} {
				got, err := b.ReadRange(ctx, r.Off, r.Len)
				if err != nil || !bytes.Equal(got, data[r.Off:r.End()]) {
					t.Fatalf("ReadRange %v: %v", r, err)
				}
			}
			scopes, grants := ts.calls()
			if len(scopes) == 0 || scopes[0] != "repository:test/repo:pull" {
				t.Fatalf("token scopes %q", scopes)
			}
			// The token is cached: one successful token fetch for all reads.
			ok := 0
			for _, g := range grants {
				if g != "" {
					ok++
				}
			}
			if ok != 1 {
				t.Fatalf("token requests %q, want exactly one", grants)
			}
			// 1 challenged HEAD + HEAD + 3 GETs.
			if n := srv.blobRequests(); n != 5 {
				t.Fatalf("blob requests %d, want 5", n)
			}
		})
	}
}

func TestParseContentRange(t *testing.T) {
	tests := []struct {
		in        string
		want      Range
		wantTotal int64
		wantErr   bool
	}{
		{in: "bytes 0-99/1000", want: Range{0, 100}, wantTotal: 1000},
		{in: "bytes 5-5/6", want: Range{5, 1}, wantTotal: 6},
		{in: "bytes 10-19/*", want: Range{10, 10}, wantTotal: -1},
		{in: "bytes 10-9/100", wantErr: true},
		{in: "bytes 0-99/99", wantErr: true},
		{in: "bytes -1-5/100", wantErr: true},
		{in: "bytes 0-99", wantErr: true},
		{in: "items 0-99/100", wantErr: true},
		{in: "", wantErr: true},
		{in: "bytes a-b/100", wantErr: true},
	}
	for _, tc := range tests {
		t.Run(tc.in, func(t *testing.T) {
			r, total, err := parseContentRange(tc.in)
			if (err != nil) != tc.wantErr {
				t.Fatalf("err = %v", err)
			}
			if !tc.wantErr && (r != tc.want || total != tc.wantTotal) {
				t.Fatalf("got %v/%d", r, total)
			}
		})
	}
}

func TestPlan(t *testing.T) {
	tests := []struct {
		name    string
		gap     int64
		maxSpan int64
		keys    []Range
		want    []Range
	}{
		{name: "far apart", gap: 10, keys: []Range{{100, 10}, {0, 10}}, want: []Range{{0, 10}, {100, 10}}},
		{name: "within gap", gap: 10, keys: []Range{{0, 10}, {20, 10}}, want: []Range{{0, 30}}},
		{name: "gap exceeded", gap: 9, keys: []Range{{0, 10}, {20, 10}}, want: []Range{{0, 10}, {20, 10}}},
		{name: "overlapping", gap: -1, keys: []Range{{0, 10}, {5, 10}, {5, 2}}, want: []Range{{0, 15}}},
		{name: "adjacent without gap", gap: -1, keys: []Range{{0, 10}, {10, 10}}, want: []Range{{0, 20}}},
		{name: "span cap", gap: 100, maxSpan: 25, keys: []Range{{0, 10}, {12, 10}, {24, 10}}, want: []Range{{0, 22}, {24, 10}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cfg, _ := Config{CoalesceGap: tc.gap, MaxSpan: tc.maxSpan}.withDefaults()
			b := &Blob{f: &Fetcher{cfg: cfg}}
			keys := make([]chunkKey, len(tc.keys))
			todo := make([]int, len(tc.keys))
			for i, r := range tc.keys {
				keys[i], todo[i] = chunkKey{off: r.Off, n: r.Len}, i
			}
			spans, members := b.plan(keys, todo)
			if fmt.Sprint(spans) != fmt.Sprint(tc.want) {
				t.Fatalf("spans %v, want %v", spans, tc.want)
			}
			for s, m := range members {
				for _, i := range m {
					if keys[i].off < spans[s].Off || keys[i].end() > spans[s].End() {
						t.Fatalf("key %v not inside span %v", keys[i], spans[s])
					}
				}
			}
		})
	}
}

func TestVerifyingReader(t *testing.T) {
	good := []byte("manifest content")
	tests := []struct {
		name    string
		body    []byte
		size    int64
		wantErr bool
	}{
		{name: "matches", body: good, size: int64(len(good))},
		{name: "matches, size unknown", body: good},
		{name: "truncated", body: good[:5], size: int64(len(good)), wantErr: true},
		{name: "too long", body: append(append([]byte(nil), good...), 'x'), size: int64(len(good)), wantErr: true},
		{name: "wrong content", body: []byte("manifest CONTENT"), size: int64(len(good)), wantErr: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			desc := ocispec.Descriptor{MediaType: ocispec.MediaTypeImageLayerGzip, Digest: digest.FromBytes(good), Size: tc.size}
			v := &verifyingReader{rc: io.NopCloser(bytes.NewReader(tc.body)), desc: desc, h: desc.Digest.Algorithm().Hash()}
			got, err := io.ReadAll(v)
			if tc.wantErr {
				if !errors.Is(err, ErrDigestMismatch) {
					t.Fatalf("err = %v, want ErrDigestMismatch", err)
				}
				return
			}
			if err != nil || !bytes.Equal(got, good) {
				t.Fatalf("ReadAll = %q, %v", got, err)
			}
		})
	}
}
