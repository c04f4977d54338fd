package registry

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/lazysnap/lazysnap/internal/testenv"
)

func randBytes(seed uint64, n int) []byte {
	b := make([]byte, n)
	r := rand.NewChaCha8([32]byte{byte(seed), byte(seed >> 8)})
	_, _ = r.Read(b)
	return b
}

func get(t *testing.T, c *http.Client, u, user, pass, rng string) (*http.Response, []byte) {
	t.Helper()
	req, err := newGet(u, user, pass, rng)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp, b
}

func TestRegistryPushAndRange(t *testing.T) {
	tests := []struct {
		name string
		opts Options
	}{
		{name: "plain", opts: Options{}},
		{name: "tls+htpasswd", opts: Options{TLS: true, Username: "alice", Password: "s3cret"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := Start(t, tc.opts)
			ctx := context.Background()
			layer := randBytes(1, 1<<20)
			img, err := r.PushImage(ctx, "test/app", "v1", layer)
			if err != nil {
				t.Fatal(err)
			}
			blobURL := fmt.Sprintf("%s/v2/test/app/blobs/%s", r.URL(), img.Layers[0].Digest)
			if tc.opts.Username != "" {
				resp, _ := get(t, r.Client(), blobURL, "", "", "")
				if resp.StatusCode != http.StatusUnauthorized {
					t.Fatalf("anonymous GET: status %d, want 401", resp.StatusCode)
				}
			}
			resp, body := get(t, r.Client(), blobURL, r.Username, r.Password, "bytes=100-199")
			if resp.StatusCode != http.StatusPartialContent || !bytes.Equal(body, layer[100:200]) {
				t.Fatalf("range GET: status %d, %d bytes", resp.StatusCode, len(body))
			}
			resp, _ = get(t, r.Client(), blobURL, r.Username, r.Password, "bytes=0-9,5000-5009")
			if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "multipart/byteranges") {
				t.Fatalf("multi-range GET: content type %q status %d", ct, resp.StatusCode)
			}
			if !r.HasBlob(img.Layers[0].Digest.String(), layer) {
				t.Fatalf("blob not at %s", r.BlobPath(img.Layers[0].Digest.String()))
			}
			r.Restart()
			resp, body = get(t, r.Client(), blobURL, r.Username, r.Password, "")
			if resp.StatusCode != http.StatusOK || !bytes.Equal(body, layer) {
				t.Fatalf("after restart: status %d", resp.StatusCode)
			}
			r.Stop()
			if r.Running() {
				t.Fatal("still running after Stop")
			}
		})
	}
}

func TestWriteHostsConfig(t *testing.T) {
	dir := t.TempDir()
	p, err := WriteHostsConfig(dir, "127.0.0.1:5000",
		Endpoint{URL: "https://127.0.0.1:5000", CAFile: "/ca.pem"},
		Endpoint{URL: "http://127.0.0.1:6000"},
		Endpoint{URL: "https://127.0.0.1:7000", SkipVerify: true, Capabilities: []string{"pull"}})
	if err != nil {
		t.Fatal(err)
	}
	if p != filepath.Join(dir, "127.0.0.1:5000", "hosts.toml") {
		t.Fatalf("path %s", p)
	}
	b, _ := os.ReadFile(p)
	want := `server = "https://127.0.0.1:5000"
ca = "/ca.pem"

[host."http://127.0.0.1:6000"]
  capabilities = ["pull", "resolve"]

[host."https://127.0.0.1:7000"]
  capabilities = ["pull"]
  skip_verify = true
`
	if string(b) != want {
		t.Fatalf("hosts.toml:\n%s\nwant:\n%s", b, want)
	}
}

func TestWANProxyDelayAndCounts(t *testing.T) {
	r := Start(t, Options{})
	layer := randBytes(2, 256<<10)
	d, err := r.Pusher().PushBlob(context.Background(), "wan/test", layer)
	if err != nil {
		t.Fatal(err)
	}
	const rtt = 30 * time.Millisecond
	p := StartWANProxy(t, r.URL(), WANOptions{RTT: rtt, BandwidthBytesPerSec: 2 << 20})
	c := &http.Client{}
	start := time.Now()
	resp, body := get(t, c, p.URL+"/v2/wan/test/blobs/"+d.Digest.String(), "", "", "")
	el := time.Since(start)
	if resp.StatusCode != http.StatusOK || !bytes.Equal(body, layer) {
		t.Fatalf("status %d", resp.StatusCode)
	}
	// connect RTT + request RTT + 256 KiB at 2 MiB/s (125 ms)
	if min := 2*rtt + 100*time.Millisecond; el < min {
		t.Fatalf("took %v, want >= %v", el, min)
	}
	s := p.Stats()
	if s.Requests != 1 || s.ResponseBytes != int64(len(layer)) || s.Connections != 1 {
		t.Fatalf("stats %v", s)
	}
}

// recordingTB records Skip and Fatal instead of acting on the real test.
type recordingTB struct {
	testing.TB
	skipped, failed bool
}

func (r *recordingTB) Helper()                  {}
func (r *recordingTB) Skip(args ...any)         { r.skipped = true; runtime.Goexit() }
func (r *recordingTB) Fatal(args ...any)        { r.failed = true; runtime.Goexit() }
func (r *recordingTB) Fatalf(string, ...any)    { r.failed = true; runtime.Goexit() }
func (r *recordingTB) Skipf(f string, a ...any) { r.Skip() }
func (r *recordingTB) TempDir() string          { return r.TB.TempDir() }
func (r *recordingTB) Cleanup(f func())         { r.TB.Cleanup(f) }

func TestStartWithoutBinary(t *testing.T) {
	tests := []struct {
		name        string
		require     string
		wantSkipped bool
		wantFailed  bool
	}{
		{name: "skips by default", wantSkipped: true},
		{name: "fails when integration is required", require: "1", wantFailed: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Setenv(testenv.RequireEnv, tc.require)
			rec := &recordingTB{TB: t}
			done := make(chan struct{})
			go func() {
				defer close(done)
				Start(rec, Options{Binary: "/nonexistent/docker-registry"})
			}()
			<-done
			if rec.skipped != tc.wantSkipped || rec.failed != tc.wantFailed {
				t.Fatalf("skipped=%v failed=%v", rec.skipped, rec.failed)
			}
		})
	}
}
