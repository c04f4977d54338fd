package registry

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"
)

// faultEnv is a registry holding one blob, behind a WAN proxy.
type faultEnv struct {
	reg  *Registry
	wan  *WANProxy
	blob []byte
	url  string // the blob's URL on the proxy
}

func startFaultEnv(t *testing.T, opts Options) *faultEnv {
	t.Helper()
	e := &faultEnv{reg: Start(t, opts), blob: randBytes(3, 512<<10)}
	d, err := e.reg.Pusher().PushBlob(context.Background(), "faults/test", e.blob)
	if err != nil {
		t.Fatal(err)
	}
	e.wan = StartWANProxy(t, e.reg.URL(), WANOptions{})
	e.url = e.wan.URL + "/v2/faults/test/blobs/" + d.Digest.String()
	return e
}

// freshClient opens a new connection per request, so that net/http does
// not transparently retry a request whose reused connection was reset.
func freshClient() *http.Client {
	return &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: 30 * time.Second}
}

// noFollow does not follow redirects.
func noFollow() *http.Client {
	c := freshClient()
	c.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	return c
}

// fetch GETs u and returns the status (0 when the request failed), the
// body read (possibly partial) and the error of the request or of reading
// the body.
func fetch(c *http.Client, u, user, pass, rng string) (int, []byte, error) {
	req, err := newGet(u, user, pass, rng)
	if err != nil {
		return 0, nil, err
	}
	resp, err := c.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if resp.StatusCode/100 == 3 {
		return resp.StatusCode, []byte(resp.Header.Get("Location")), err
	}
	return resp.StatusCode, b, err
}

// newGet is a GET of u with optional basic auth and Range header.
func newGet(u, user, pass, rng string) (*http.Request, error) {
	req, err := http.NewRequest(http.MethodGet, u, nil)
	if err != nil {
		return nil, err
	}
	if user != "" {
		req.SetBasicAuth(user, pass)
	}
	if rng != "" {
		req.Header.Set("Range", rng)
	}
	return req, nil
}

func TestWANProxyResetsAndDelay(t *testing.T) {
	e := startFaultEnv(t, Options{})
	tests := []struct {
		name   string
		faults Faults
		// want per request: "ok", "refused" (no response) or "cut" (a 200
		// whose body breaks off after a correct prefix)
		want       []string
		wantStats  WANStats
		cutAtBytes int
	}{
		{name: "no faults", want: []string{"ok", "ok"}},
		{name: "delay", faults: Faults{Delay: 200 * time.Millisecond}, want: []string{"ok", "ok"},
			wantStats: WANStats{Delayed: 2}},
		{name: "reset before the response", faults: Faults{ResetEvery: 1}, want: []string{"refused", "refused"},
			wantStats: WANStats{Resets: 2}},
		{name: "reset mid-body", faults: Faults{ResetEvery: 1, ResetAfter: 100 << 10}, want: []string{"cut", "cut"},
			wantStats: WANStats{Resets: 2}, cutAtBytes: 100 << 10},
		{name: "every third request", faults: Faults{ResetEvery: 3}, want: []string{"ok", "ok", "refused", "ok", "ok", "refused"},
			wantStats: WANStats{Resets: 2}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e.wan.SetFaults(tc.faults)
			defer e.wan.SetFaults(Faults{})
			e.wan.Reset()
			for i, want := range tc.want {
				start := time.Now()
				status, body, err := fetch(freshClient(), e.url, "", "", "")
				var got string
				switch {
				case err == nil && status == http.StatusOK && bytes.Equal(body, e.blob):
					got = "ok"
				case status == 0 && err != nil:
					got = "refused"
				case status == http.StatusOK && err != nil && len(body) <= tc.cutAtBytes && bytes.Equal(body, e.blob[:len(body)]):
					got = "cut"
				default:
					got = "unexpected"
				}
				if got != want {
					t.Fatalf("request %d: %s (status %d, %d bytes, err %v), want %s", i, got, status, len(body), err, want)
				}
				// a lower bound only: the proxy cannot answer before the delay
				if el := time.Since(start); el < tc.faults.Delay {
					t.Errorf("request %d answered after %v, before the %v delay", i, el, tc.faults.Delay)
				}
			}
			st := e.wan.Stats()
			if st.Delayed != tc.wantStats.Delayed || st.Resets != tc.wantStats.Resets {
				t.Errorf("stats %v, want %d delayed, %d resets", st, tc.wantStats.Delayed, tc.wantStats.Resets)
			}
		})
	}
	t.Run("faults spare non-blob requests", func(t *testing.T) {
		e.wan.SetFaults(Faults{ResetEvery: 1, Delay: time.Hour})
		defer e.wan.SetFaults(Faults{})
		if status, _, err := fetch(freshClient(), e.wan.URL+"/v2/", "", "", ""); err != nil || status != http.StatusOK {
			t.Fatalf("GET /v2/ under faults: %d %v", status, err)
		}
		if got := e.wan.Faults(); got.ResetEvery != 1 {
			t.Fatalf("Faults() = %+v", got)
		}
	})
}

// TestWANProxyStall: a stalling response sends its header and StallAfter
// body bytes, then holds the connection without sending until the client
// gives up; the other requests are answered whole.
func TestWANProxyStall(t *testing.T) {
	e := startFaultEnv(t, Options{})
	tests := []struct {
		name   string
		faults Faults
		// per request: "ok" or "stalled" (a 200 whose body stops after
		// exactly StallAfter correct bytes, the connection still open)
		want []string
	}{
		{name: "every request after 100 KiB", faults: Faults{StallEvery: 1, StallAfter: 100 << 10}, want: []string{"stalled", "stalled"}},
		{name: "right after the header", faults: Faults{StallEvery: 1}, want: []string{"stalled"}},
		{name: "every second request", faults: Faults{StallEvery: 2, StallAfter: 1000}, want: []string{"ok", "stalled", "ok", "stalled"}},
		{name: "less body than StallAfter is sent whole", faults: Faults{StallEvery: 1, StallAfter: 1 << 20}, want: []string{"ok"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e.wan.SetFaults(tc.faults)
			defer e.wan.SetFaults(Faults{})
			e.wan.Reset()
			stalled := 0
			for i, want := range tc.want {
				// the client gives up on a stalled response after 1 s
				ctx, cancel := context.WithTimeout(context.Background(), time.Second)
				req, err := http.NewRequestWithContext(ctx, http.MethodGet, e.url, nil)
				if err != nil {
					t.Fatal(err)
				}
				resp, err := freshClient().Do(req)
				if err != nil {
					cancel()
					t.Fatalf("request %d: %v", i, err)
				}
				body, err := io.ReadAll(resp.Body)
				resp.Body.Close()
				cancel()
				got := "unexpected"
				switch {
				case resp.StatusCode != http.StatusOK:
				case err == nil && bytes.Equal(body, e.blob):
					got = "ok"
				case errors.Is(err, context.DeadlineExceeded) && int64(len(body)) == tc.faults.StallAfter && bytes.Equal(body, e.blob[:len(body)]):
					got = "stalled"
					stalled++
				}
				if got != want {
					t.Fatalf("request %d: %s (status %d, %d bytes, err %v), want %s", i, got, resp.StatusCode, len(body), err, want)
				}
			}
			if n := e.wan.Stalls(); n != int64(stalled) {
				t.Errorf("Stalls() = %d, want %d", n, stalled)
			}
		})
	}
}

func TestWANProxyRedirectExpiry(t *testing.T) {
	tests := []struct {
		name       string
		opts       Options
		user, pass string
	}{
		{name: "anonymous"},
		{name: "basic auth", opts: Options{Username: "alice", Password: "s3cret"}, user: "alice", pass: "s3cret"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := startFaultEnv(t, tc.opts)
			e.wan.SetFaults(Faults{RedirectUses: 2})
			c := noFollow()
			status, loc, _ := fetch(c, e.url, tc.user, tc.pass, "")
			if status != http.StatusTemporaryRedirect || !strings.HasPrefix(string(loc), e.wan.StorageURL+"/signed/") {
				t.Fatalf("blob GET: status %d location %q, want 307 to %s", status, loc, e.wan.StorageURL)
			}
			// the location carries the original credentials, like a signed URL
			for i := range 2 {
				status, body, err := fetch(c, string(loc), "", "", "bytes=1000-1999")
				if err != nil || status != http.StatusPartialContent || !bytes.Equal(body, e.blob[1000:2000]) {
					t.Fatalf("use %d of the location: status %d, %d bytes, %v", i+1, status, len(body), err)
				}
			}
			status, body, _ := fetch(c, string(loc), "", "", "bytes=0-9")
			if status != http.StatusForbidden || !strings.Contains(string(body), "Request has expired") {
				t.Fatalf("third use: status %d %q, want 403 expired", status, body)
			}
			// asking the registry again gives a fresh location; a client
			// that follows redirects gets the blob
			status, body, err := fetch(freshClient(), e.url, tc.user, tc.pass, "")
			if err != nil || status != http.StatusOK || !bytes.Equal(body, e.blob) {
				t.Fatalf("followed redirect: status %d, %d bytes, %v", status, len(body), err)
			}
			if st := e.wan.Stats(); st.Redirects != 2 || st.Expired != 1 {
				t.Fatalf("stats %v, want 2 redirects and 1 expired", st)
			}
			if tc.user != "" {
				// no credentials, no blob: the signed location is not a way around auth
				if status, _, _ := fetch(freshClient(), e.url, "", "", ""); status != http.StatusUnauthorized {
					t.Fatalf("anonymous GET through the redirect: status %d, want 401", status)
				}
			}
		})
	}
	t.Run("time limit", func(t *testing.T) {
		// The proxy's clock is the test's: it moves only when told, so the
		// location is fresh however slowly the first fetch goes.
		var mu sync.Mutex
		now := time.Unix(1e9, 0)
		clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
		e := startFaultEnv(t, Options{})
		e.wan = StartWANProxy(t, e.reg.URL(), WANOptions{Now: clock})
		e.url = e.wan.URL + e.url[strings.Index(e.url, "/v2/"):]
		e.wan.SetFaults(Faults{RedirectUses: 100, RedirectTTL: 50 * time.Millisecond})
		c := noFollow()
		_, loc, _ := fetch(c, e.url, "", "", "")
		if status, _, _ := fetch(c, string(loc), "", "", "bytes=0-9"); status != http.StatusPartialContent {
			t.Fatalf("fresh location: status %d", status)
		}
		mu.Lock()
		now = now.Add(50 * time.Millisecond)
		mu.Unlock()
		if status, _, _ := fetch(c, string(loc), "", "", "bytes=0-9"); status != http.StatusForbidden {
			t.Fatalf("location past its time limit: status %d, want 403", status)
		}
		if status, _, _ := fetch(c, e.wan.StorageURL+"/signed/unknown", "", "", ""); status != http.StatusForbidden {
			t.Fatalf("unknown location: status %d, want 403", status)
		}
	})
}

func TestSetCredentials(t *testing.T) {
	if err := Start(t, Options{}).SetCredentials("bob", "pw"); err == nil {
		t.Fatal("SetCredentials on a registry without auth: no error")
	}
	r := Start(t, Options{Username: "alice", Password: "old"})
	d, err := r.Pusher().PushBlob(context.Background(), "creds/test", []byte("rotated"))
	if err != nil {
		t.Fatal(err)
	}
	u := r.URL() + "/v2/creds/test/blobs/" + d.Digest.String()
	if err := r.SetCredentials("alice", "new"); err != nil {
		t.Fatal(err)
	}
	r.Restart()
	tests := []struct {
		name       string
		pass       string
		wantStatus int
	}{
		{name: "old password", pass: "old", wantStatus: http.StatusUnauthorized},
		{name: "new password", pass: "new", wantStatus: http.StatusOK},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if status, _, err := fetch(r.Client(), u, "alice", tc.pass, ""); err != nil || status != tc.wantStatus {
				t.Fatalf("status %d %v, want %d", status, err, tc.wantStatus)
			}
		})
	}
	if r.Password != "new" || r.Pusher().Password != "new" {
		t.Fatalf("Password %q after SetCredentials", r.Password)
	}
}
