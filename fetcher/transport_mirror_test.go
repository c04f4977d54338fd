package fetcher

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/containerd/containerd/v2/core/remotes/docker"
)

// TestMirrorTransport: hosts are tried in order, each at its own address
// and API path with its headers (a mirror with the "ns" parameter); a
// host's failure sends the request on, the first host's error is the
// result when all fail; a mirror that is down gets one attempt and is
// then passed over while it rests, one that refuses is not rested; the
// caller's cues and sink failures end the request at once; a request
// body is given to each host again.
func TestMirrorTransport(t *testing.T) {
	ok := step{body: "0123456789"}
	const (
		m1 = iota
		m2
		reg
	)
	for _, tc := range []struct {
		name    string
		method  string // "": GET
		body    string
		steps   [3][]step // per host: mirror 1, mirror 2, the registry
		down    int       // this host's server is closed (-1: none)
		readErr map[int]error
		twice   bool // the request is made a second time

		wantRequests  [3]int // over both rounds
		wantKind      error  // nil: success
		wantHost      int    // whose error it is
		wantFallbacks [2]int // mirrors' MirrorFallbacks
		wantBody      string // what every host that was asked got
	}{
		{name: "first mirror answers", steps: [3][]step{{ok}, {ok}, {ok}}, down: -1,
			wantRequests: [3]int{1, 0, 0}},
		{name: "in order: refusing mirror, then the next", steps: [3][]step{{{status: 404}}, {ok}, {ok}}, down: -1,
			wantRequests: [3]int{1, 1, 0}, wantFallbacks: [2]int{1, 0}},
		{name: "mirror down: one attempt, then rested", steps: [3][]step{{{status: 503}, ok}, {{status: 502}, ok}, {ok}}, down: -1, twice: true,
			wantRequests: [3]int{1, 1, 2}, wantFallbacks: [2]int{2, 2}},
		{name: "mirror unreachable", steps: [3][]step{{ok}, {ok}, {ok}}, down: m1, twice: true,
			wantRequests: [3]int{0, 2, 0}, wantFallbacks: [2]int{2, 0}},
		{name: "refusing mirror is not rested", steps: [3][]step{{{status: 404}}, {{status: 401}}, {ok}}, down: -1, twice: true,
			wantRequests: [3]int{2, 2, 2}, wantFallbacks: [2]int{2, 2}},
		{name: "bad response retried on the mirror", steps: [3][]step{{ok}, {ok}, {ok}}, down: -1,
			readErr: map[int]error{m1: badResponse(206, "x")}, wantRequests: [3]int{3, 1, 0}, wantFallbacks: [2]int{1, 0}},
		{name: "all fail: the first host's error", steps: [3][]step{{{status: 404}}, {{status: 401}}, {{status: 500}}}, down: -1,
			wantRequests: [3]int{1, 1, 3}, wantKind: ErrNotFound, wantHost: m1, wantFallbacks: [2]int{1, 1}},
		{name: "registry down after the mirrors", steps: [3][]step{{{status: 404}}, {{status: 404}}, {ok}}, down: reg,
			wantRequests: [3]int{1, 1, 0}, wantKind: ErrNotFound, wantHost: m1, wantFallbacks: [2]int{1, 1}},
		{name: "multi-range cue ends it", steps: [3][]step{{ok}, {ok}, {ok}}, down: -1,
			readErr: map[int]error{m1: errMultiRangeUnsupported}, wantRequests: [3]int{1, 0, 0}, wantKind: errMultiRangeUnsupported, wantHost: -1},
		{name: "suffix cue goes on, not counted", steps: [3][]step{{ok}, {ok}, {ok}}, down: -1,
			readErr: map[int]error{m1: errSuffixUnsupported}, wantRequests: [3]int{1, 1, 0}},
		{name: "sink failure ends it", steps: [3][]step{{ok}, {ok}, {ok}}, down: -1,
			readErr: map[int]error{m1: &sinkError{io.ErrShortWrite}}, wantRequests: [3]int{1, 0, 0}, wantKind: io.ErrShortWrite, wantHost: m1},
		{name: "body given to each host", method: http.MethodPut, body: "payload", steps: [3][]step{{{status: 404}}, {{status: 404}}, {ok}}, down: -1,
			wantRequests: [3]int{1, 1, 1}, wantFallbacks: [2]int{1, 1}, wantBody: "payload"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newTestFetcher(t, Config{Retries: 2, RetryBaseDelay: time.Millisecond})
			var srvs [3]*scriptServer
			m := &mirrorTransport{f: f}
			for i := range srvs {
				srvs[i] = newScriptServer(t, tc.steps[i]...)
				h := docker.RegistryHost{Host: strings.TrimPrefix(srvs[i].URL, "http://"), Scheme: "http", Path: "/v2",
					Header: http.Header{"X-Host": {strings.Repeat("h", i+1)}}}
				if i == reg {
					h.Path = "/reg/v2"
				}
				m.hosts = append(m.hosts, h)
				m.next = append(m.next, &retryTransport{next: plainTransport(t), f: f})
			}
			if tc.down >= 0 {
				srvs[tc.down].Close()
			}
			refHost := m.hosts[reg].Host
			roundTrip := func() error {
				ctx := withConsumer(context.Background(), &consumer{read: func(resp *http.Response) error {
					h := routedHost(resp.Request.Context())
					for i := range m.hosts {
						if m.hosts[i].Host == h && tc.readErr[i] != nil {
							return tc.readErr[i]
						}
					}
					if resp.StatusCode != http.StatusOK {
						return statusError(resp.StatusCode)
					}
					_, err := io.ReadAll(resp.Body)
					return err
				}})
				var body io.Reader
				if tc.body != "" {
					body = strings.NewReader(tc.body)
				}
				req, err := http.NewRequestWithContext(ctx, cmpMethod(tc.method), registryURL(refHost, "repo/blobs/sha256:ab"), body)
				if err != nil {
					t.Fatal(err)
				}
				resp, err := m.RoundTrip(req)
				if err == nil {
					resp.Body.Close()
				}
				return err
			}
			err := roundTrip()
			if tc.twice {
				if err != nil {
					t.Fatalf("first round: %v", err)
				}
				err = roundTrip()
			}
			for i, s := range srvs {
				seen := s.requests()
				if len(seen) != tc.wantRequests[i] {
					t.Errorf("host %d: %d requests, want %d", i, len(seen), tc.wantRequests[i])
				}
				for _, r := range seen {
					wantPath, wantQuery := "/v2/repo/blobs/sha256:ab", url.Values{"ns": {refHost}}.Encode()
					if i == reg {
						wantPath, wantQuery = "/reg/v2/repo/blobs/sha256:ab", ""
					}
					if r.path != wantPath || r.query != wantQuery || r.header != strings.Repeat("h", i+1) || r.body != tc.wantBody {
						t.Errorf("host %d saw %+v, want path %s, query %q, its header, body %q", i, r, wantPath, wantQuery, tc.wantBody)
					}
				}
			}
			for i := range 2 {
				if n := f.Stats()[m.hosts[i].Host].MirrorFallbacks; n != int64(tc.wantFallbacks[i]) {
					t.Errorf("mirror %d: %d fallbacks, want %d", i, n, tc.wantFallbacks[i])
				}
			}
			if tc.wantKind == nil {
				if err != nil {
					t.Fatalf("err = %v, want success", err)
				}
				return
			}
			if !errors.Is(err, tc.wantKind) {
				t.Fatalf("err = %v, want %v", err, tc.wantKind)
			}
			var re *RequestError
			if tc.wantHost >= 0 && (!errors.As(err, &re) || re.Host != m.hosts[tc.wantHost].Host) {
				t.Errorf("err = %v, want host %d's", err, tc.wantHost)
			}
		})
	}
}

// TestMirrorTransportContext: a caller whose context ends is not sent on
// to the next host.
func TestMirrorTransportContext(t *testing.T) {
	f := newTestFetcher(t, Config{})
	ctx, cancel := context.WithCancel(context.Background())
	mirror := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		cancel()
		<-r.Context().Done()
	}))
	defer mirror.Close()
	reg := newScriptServer(t, step{body: "x"})
	m := &mirrorTransport{f: f}
	for _, s := range []*httptest.Server{mirror, reg.Server} {
		m.hosts = append(m.hosts, docker.RegistryHost{Host: strings.TrimPrefix(s.URL, "http://"), Scheme: "http", Path: "/v2"})
		m.next = append(m.next, &retryTransport{next: plainTransport(t), f: f})
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, registryURL("registry.test", "repo/blobs/sha256:ab"), nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := m.RoundTrip(req); !errors.Is(err, context.Canceled) {
		t.Errorf("err = %v, want context.Canceled", err)
	}
	if n := len(reg.requests()); n != 0 {
		t.Errorf("registry asked %d times after the caller gave up", n)
	}
}

// hostCreds is a CredentialSource with one credential per host.
type hostCreds map[string]credential

func (c hostCreds) Credentials(_ context.Context, _, host string, _ bool) (string, string, bool, error) {
	cr, ok := c[host]
	return cr.user, cr.secret, ok, nil
}

// TestBlobMirrorHosts: a Blob's reads go to the pull hosts of hosts.toml
// in order, each with its own credentials only (a mirror never sees the
// registry's, nor the registry the mirror's), and a host without the pull
// capability is not asked for blobs.
func TestBlobMirrorHosts(t *testing.T) {
	data := randBytes(42, 64<<10)
	for _, tc := range []struct {
		name         string
		capabilities string
		mirrorHas    bool // the mirror serves the blob (else 404)
		wantMirror   bool // the mirror is asked for the blob
		wantRegistry bool
	}{
		{name: "mirror serves", capabilities: `["pull", "resolve"]`, mirrorHas: true, wantMirror: true},
		{name: "mirror lacks the blob", capabilities: `["pull", "resolve"]`, wantMirror: true, wantRegistry: true},
		{name: "resolve-only mirror not asked", capabilities: `["resolve"]`, mirrorHas: true, wantRegistry: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			mcred, rcred := credential{"m", "mirror-secret"}, credential{"r", "registry-secret"}
			mirror := newFakeRegistry(t, data, nil)
			reg := newFakeRegistry(t, data, nil)
			basicGate(reg, rcred)
			basicGate(mirror, mcred)
			if !tc.mirrorHas {
				gate := mirror.hook
				mirror.hook = func(n int, w http.ResponseWriter, r *http.Request) bool {
					if gate(n, w, r) {
						return true
					}
					http.NotFound(w, r)
					return true
				}
			}
			dir := t.TempDir()
			must(t, os.MkdirAll(filepath.Join(dir, reg.host()), 0o755))
			must(t, os.WriteFile(filepath.Join(dir, reg.host(), "hosts.toml"), []byte(fmt.Sprintf(
				"server = %q\n\n[host.%q]\n  capabilities = %s\n", reg.URL, mirror.URL, tc.capabilities)), 0o644))
			f := newTestFetcher(t, Config{HostsDir: dir, Credentials: []CredentialSource{hostCreds{reg.host(): rcred, mirror.host(): mcred}}})
			b := mustBlob(t, f, reg.ref(), reg.desc())
			got, err := b.ReadRange(context.Background(), 100, 1000)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, data[100:1100]) {
				t.Fatal("wrong bytes")
			}
			for _, s := range []struct {
				name string
				srv  *fakeRegistry
				want bool
				own  credential
			}{{"mirror", mirror, tc.wantMirror, mcred}, {"registry", reg, tc.wantRegistry, rcred}} {
				if asked := s.srv.blobRequests() > 0; asked != s.want {
					t.Errorf("%s asked for the blob: %v, want %v", s.name, asked, s.want)
				}
				for _, r := range s.srv.requests() {
					if r.Auth != "" && r.Auth != "Basic "+basicAuth(s.own.user, s.own.secret) {
						t.Errorf("%s got credentials %q, not its own", s.name, r.Auth)
					}
				}
			}
		})
	}
}

// TestMirrorSameAsServer: a hosts.toml naming one endpoint as mirror and as
// server (as containerd 1.6's ctr needs) asks it once for what it lacks,
// not once per entry.
func TestMirrorSameAsServer(t *testing.T) {
	data := randBytes(43, 16<<10)
	reg := newFakeRegistry(t, data, nil)
	reg.hook = func(n int, w http.ResponseWriter, r *http.Request) bool {
		http.NotFound(w, r)
		return true
	}
	dir := t.TempDir()
	must(t, os.MkdirAll(filepath.Join(dir, reg.host()), 0o755))
	must(t, os.WriteFile(filepath.Join(dir, reg.host(), "hosts.toml"), []byte(fmt.Sprintf(
		"server = %q\n\n[host.%q]\n  capabilities = [\"pull\", \"resolve\"]\n", reg.URL, reg.URL)), 0o644))
	f := newTestFetcher(t, Config{HostsDir: dir})
	b := mustBlob(t, f, reg.ref(), reg.desc())
	if _, err := b.ReadRange(context.Background(), 100, 1000); err == nil {
		t.Fatal("read of a blob the registry lacks succeeded")
	}
	if n := reg.blobRequests(); n != 1 {
		t.Errorf("the registry was asked for the blob %d times, want 1", n)
	}
}
