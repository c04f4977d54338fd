package fetcher

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/lazysnap/lazysnap/internal/testenv/registry"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// These tests run Debian's docker-registry (CNCF distribution) on loopback;
// they skip when it is not installed unless LAZYSNAP_REQUIRE_INTEGRATION=1.

func pushTestImage(t *testing.T, r *registry.Registry, repo string, layer []byte) registry.Image {
	t.Helper()
	img, err := r.PushImage(context.Background(), repo, "v1", layer)
	if err != nil {
		t.Fatalf("push: %v\nregistry log:\n%s", err, r.Log())
	}
	return img
}

func writeHosts(t *testing.T, name string, server registry.Endpoint, mirrors ...registry.Endpoint) string {
	t.Helper()
	dir := t.TempDir()
	if _, err := registry.WriteHostsConfig(dir, name, server, mirrors...); err != nil {
		t.Fatal(err)
	}
	return dir
}

func readAllClose(t *testing.T, rc io.ReadCloser) []byte {
	t.Helper()
	defer rc.Close()
	b, err := io.ReadAll(rc)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// scattered returns n ranges of size each, spread over size total.
func scattered(total int64, n int, size int64) []Range {
	rs := make([]Range, n)
	step := (total - size) / int64(n)
	for i := range rs {
		rs[i] = Range{Off: int64(i)*step + int64(i*7919)%4096, Len: size}
	}
	return rs
}

// checkImage resolves the image, fetches manifest and config, finds the
// layer size by HEAD and reads single and scattered ranges.
func checkImage(t *testing.T, f *Fetcher, img registry.Image, layer []byte) {
	t.Helper()
	ctx := context.Background()
	name, desc, err := f.Resolve(ctx, img.Ref)
	if err != nil {
		t.Fatalf("Resolve: %v", err)
	}
	if name != img.Ref || desc.Digest != img.Manifest.Digest || desc.MediaType != ocispec.MediaTypeImageManifest {
		t.Fatalf("Resolve = %s %+v", name, desc)
	}
	rc, err := f.Fetch(ctx, img.Ref, desc)
	if err != nil {
		t.Fatalf("Fetch manifest: %v", err)
	}
	if m := readAllClose(t, rc); !bytes.Equal(m, img.ManifestBytes) {
		t.Fatal("manifest bytes differ")
	}
	rc, err = f.Fetch(ctx, img.Ref, img.Config)
	if err != nil {
		t.Fatalf("Fetch config: %v", err)
	}
	readAllClose(t, rc)

	ld := img.Layers[0]
	ld.Size = 0
	b, err := f.Blob(ctx, img.Ref, ld)
	if err != nil {
		t.Fatalf("Blob: %v", err)
	}
	if b.Size() != int64(len(layer)) {
		t.Fatalf("size by HEAD = %d, want %d", b.Size(), len(layer))
	}
	got, err := b.ReadRange(ctx, 12345, 6789)
	if err != nil || !bytes.Equal(got, layer[12345:12345+6789]) {
		t.Fatalf("ReadRange: %v", err)
	}
	rs := scattered(int64(len(layer)), 16, 4096)
	all, err := b.ReadRanges(ctx, rs)
	if err != nil {
		t.Fatalf("ReadRanges: %v", err)
	}
	for i, r := range rs {
		if !bytes.Equal(all[i], layer[r.Off:r.End()]) {
			t.Fatalf("range %v: wrong bytes", r)
		}
	}
}

func TestRegistryAnonymousPlainHTTP(t *testing.T) {
	r := registry.Start(t, registry.Options{})
	layer := randBytes(50, 4<<20)
	img := pushTestImage(t, r, "anon/app", layer)
	tests := []struct {
		name     string
		hostsDir string
	}{
		{name: "containerd defaults (localhost with port is HTTP)"},
		{name: "hosts.toml with a plain-HTTP server", hostsDir: writeHosts(t, r.Host, r.Endpoint())},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := newTestFetcher(t, Config{HostsDir: tc.hostsDir, CacheDir: t.TempDir()})
			checkImage(t, f, img, layer)
			// Scattered ranges went out as one multi-range request.
			ld := img.Layers[0]
			b := mustBlob(t, f, img.Ref, ld)
			before := f.Stats()[r.Host].Requests
			if _, err := b.ReadRanges(context.Background(), scattered(ld.Size, 20, 1000)); err != nil {
				t.Fatal(err)
			}
			if n := f.Stats()[r.Host].Requests - before; n != 1 {
				t.Fatalf("20 scattered ranges took %d requests, want 1", n)
			}
		})
	}
	t.Run("missing blob is ErrNotFound", func(t *testing.T) {
		f := newTestFetcher(t, Config{})
		_, err := f.Blob(context.Background(), img.Ref, ocispec.Descriptor{MediaType: ocispec.MediaTypeImageLayerGzip, Digest: digest.FromString("absent")})
		if !errors.Is(err, ErrNotFound) {
			t.Fatalf("err = %v", err)
		}
		_, _, err = f.Resolve(context.Background(), r.Ref("anon/app", "nope"))
		if !errors.Is(err, ErrNotFound) {
			t.Fatalf("Resolve err = %v", err)
		}
	})
}

func TestRegistryTLSBasicAuth(t *testing.T) {
	installCredentialHelper(t, "lazysnaptest", `#!/bin/sh
read server
echo "{\"ServerURL\":\"$server\",\"Username\":\"alice\",\"Secret\":\"s3cret\"}"
`)
	r := registry.Start(t, registry.Options{TLS: true, Username: "alice", Password: "s3cret"})
	layer := randBytes(51, 2<<20)
	img := pushTestImage(t, r, "secure/app", layer)
	auths := func(user, pass string) string {
		return fmt.Sprintf(`{"auths":{%q:{"auth":%q}}}`, r.Host, basicAuth(user, pass))
	}
	withCA := writeHosts(t, r.Host, r.Endpoint())
	skipVerify := writeHosts(t, r.Host, registry.Endpoint{URL: r.URL(), SkipVerify: true})
	noCA := writeHosts(t, r.Host, registry.Endpoint{URL: r.URL()})
	tests := []struct {
		name     string
		hostsDir string
		config   string
		wantErr  error
	}{
		{name: "CA from hosts.toml, auths", hostsDir: withCA, config: auths("alice", "s3cret")},
		{name: "CA from hosts.toml, credHelpers", hostsDir: withCA, config: fmt.Sprintf(`{"credHelpers":{%q:"lazysnaptest"}}`, r.Host)},
		{name: "CA from hosts.toml, credsStore", hostsDir: withCA, config: `{"credsStore":"lazysnaptest"}`},
		{name: "skip_verify", hostsDir: skipVerify, config: auths("alice", "s3cret")},
		{name: "wrong password", hostsDir: withCA, config: auths("alice", "wrong"), wantErr: ErrUnauthorized},
		{name: "no credentials", hostsDir: withCA, wantErr: ErrUnauthorized},
		{name: "untrusted certificate", hostsDir: noCA, config: auths("alice", "s3cret"), wantErr: ErrUnavailable},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cfg := Config{HostsDir: tc.hostsDir, Retries: -1}
			if tc.config != "" {
				cfg.DockerConfigPath = writeDockerConfig(t, tc.config)
			}
			f := newTestFetcher(t, cfg)
			if tc.wantErr == nil {
				checkImage(t, f, img, layer)
				return
			}
			ctx := context.Background()
			_, _, err := f.Resolve(ctx, img.Ref)
			if !errors.Is(err, tc.wantErr) {
				t.Fatalf("Resolve err = %v, want %v", err, tc.wantErr)
			}
			t.Logf("resolve error: %v", err)
			_, err = f.Blob(ctx, img.Ref, ocispec.Descriptor{MediaType: img.Layers[0].MediaType, Digest: img.Layers[0].Digest})
			if !errors.Is(err, tc.wantErr) {
				t.Fatalf("Blob err = %v, want %v", err, tc.wantErr)
			}
			b := mustBlob(t, f, img.Ref, img.Layers[0]) // size known: no request
			_, err = b.ReadRange(ctx, 0, 100)
			if !errors.Is(err, tc.wantErr) {
				t.Fatalf("ReadRange err = %v, want %v", err, tc.wantErr)
			}
			t.Logf("error: %v", err)
		})
	}
}

// TestRegistryPullThroughMirror puts a pull-through cache registry
// (distribution proxy.remoteurl) in front of a TLS upstream and configures
// it as a mirror in hosts.toml: everything is served through the mirror,
// which stores the blob; with the mirror down, reads fall back to the
// upstream. (Distribution 2.8's proxy authenticates to its remote only with
// bearer tokens, not htpasswd basic auth, so the upstream here is
// anonymous.)
func TestRegistryPullThroughMirror(t *testing.T) {
	up := registry.Start(t, registry.Options{TLS: true})
	layer := randBytes(52, 3<<20)
	img := pushTestImage(t, up, "team/app", layer)
	mirror := registry.Start(t, registry.Options{Proxy: &registry.ProxyOptions{RemoteURL: up.URL(), CAFile: up.CAFile}})
	hosts := writeHosts(t, up.Host, up.Endpoint(), mirror.Endpoint())
	f := newTestFetcher(t, Config{HostsDir: hosts, CacheDir: t.TempDir(), Retries: 1})
	checkImage(t, f, img, layer)
	stats := f.Stats()
	if stats[up.Host].Requests != 0 {
		t.Fatalf("fetcher went to the upstream directly: %+v", stats)
	}
	if stats[mirror.Host].Requests == 0 {
		t.Fatalf("no requests to the mirror: %+v", stats)
	}
	ld := img.Layers[0]
	deadline := time.Now().Add(10 * time.Second)
	for !mirror.HasBlob(ld.Digest.String(), layer) {
		if time.Now().After(deadline) {
			t.Fatalf("mirror did not store the layer at %s; mirror log:\n%s", mirror.BlobPath(ld.Digest.String()), mirror.Log())
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Logf("through the mirror: %+v", stats)

	// Mirror down: reads fall back to the upstream (with credentials).
	mirror.Stop()
	b := mustBlob(t, f, img.Ref, ld)
	got, err := b.ReadRange(context.Background(), 2<<20, 1000)
	if err != nil || !bytes.Equal(got, layer[2<<20:2<<20+1000]) {
		t.Fatalf("fallback read: %v", err)
	}
	if f.Stats()[up.Host].Requests == 0 {
		t.Fatal("fallback did not reach the upstream")
	}
}

// TestRegistryStoppedMidRead kills the registry while a large range is
// streaming (slowed by a bandwidth-capped proxy). The range is larger than
// what loopback socket buffers can hold, so the kill breaks the stream.
func TestRegistryStoppedMidRead(t *testing.T) {
	r := registry.Start(t, registry.Options{})
	layer := randBytes(53, 32<<20)
	img := pushTestImage(t, r, "fault/app", layer)
	const off, n = 1 << 20, 24 << 20
	tests := []struct {
		name       string
		cfg        Config
		restartNow bool // restart while the read is still retrying
	}{
		{name: "registry stays down: clear error, later read succeeds", cfg: Config{Retries: 2, RetryBaseDelay: 20 * time.Millisecond}},
		{name: "registry back during retries: the read succeeds", cfg: Config{Retries: 30, RetryBaseDelay: 50 * time.Millisecond}, restartNow: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if !r.Running() {
				r.Restart()
			}
			wan := registry.StartWANProxy(t, r.URL(), registry.WANOptions{BandwidthBytesPerSec: 16 << 20})
			tc.cfg.CacheDir = t.TempDir()
			f := newTestFetcher(t, tc.cfg)
			ref := wan.Host + "/fault/app:v1"
			b := mustBlob(t, f, ref, img.Layers[0])
			done := goReadRange(context.Background(), b, off, n)
			waitFor(t, "the body to be streaming", func() bool { return wan.Stats().ResponseBytes > 1<<20 })
			r.Kill()
			if tc.restartNow {
				time.Sleep(200 * time.Millisecond)
				r.Restart()
			}
			res := <-done
			if tc.restartNow {
				if res.err != nil || !bytes.Equal(res.data, layer[off:off+n]) {
					t.Fatalf("read across restart: %v", res.err)
				}
				return
			}
			if !errors.Is(res.err, ErrUnavailable) {
				t.Fatalf("err = %v, want ErrUnavailable", res.err)
			}
			t.Logf("error while down: %v", res.err)
			if u := f.CacheUsage(); u.Entries != 0 {
				t.Fatalf("partial data cached: %+v", u)
			}
			r.Restart()
			got, err := b.ReadRange(context.Background(), off, n)
			if err != nil || !bytes.Equal(got, layer[off:off+n]) {
				t.Fatalf("read after restart: %v", err)
			}
		})
	}
}

// TestHungMirror: a mirror that accepts connections and never answers costs
// one request timeout, once: the read falls back to the upstream after a
// single attempt on the mirror (no retries there), and the reads after it
// pass the mirror over (mirrorRest) instead of each waiting a timeout.
func TestHungMirror(t *testing.T) {
	up := registry.Start(t, registry.Options{})
	layer := randBytes(54, 1<<20)
	img := pushTestImage(t, up, "team/app", layer)
	hung, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer hung.Close()
	var accepted atomic.Int64
	var held []net.Conn
	var mu sync.Mutex
	go func() {
		for {
			c, err := hung.Accept()
			if err != nil {
				return
			}
			accepted.Add(1)
			mu.Lock()
			held = append(held, c) // never answered
			mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		mu.Lock()
		defer mu.Unlock()
		for _, c := range held {
			c.Close()
		}
	})
	hosts := writeHosts(t, up.Host, up.Endpoint(), registry.Endpoint{URL: "http://" + hung.Addr().String()})
	var wrapped sync.Map // host → requests the WrapTransport wrapper saw
	f := newTestFetcher(t, Config{HostsDir: hosts, RequestTimeout: 300 * time.Millisecond, Retries: 3,
		WrapTransport: func(rt http.RoundTripper) http.RoundTripper {
			return roundTripper(func(r *http.Request) (*http.Response, error) {
				n, _ := wrapped.LoadOrStore(r.URL.Host, new(atomic.Int64))
				n.(*atomic.Int64).Add(1)
				return rt.RoundTrip(r)
			})
		}})
	b := mustBlob(t, f, img.Ref, img.Layers[0])
	for i, off := range []int64{0, 300 << 10, 700 << 10} {
		got, err := b.ReadRange(context.Background(), off, 1000)
		if err != nil || !bytes.Equal(got, layer[off:off+1000]) {
			t.Fatalf("read %d: %v", i, err)
		}
	}
	if n := accepted.Load(); n != 1 {
		t.Errorf("the hung mirror got %d connections, want 1 (one attempt, then passed over)", n)
	}
	if f.Stats()[up.Host].Requests == 0 {
		t.Error("no read reached the upstream")
	}
	// each read went on from the mirror to the upstream: counted
	if n := f.Stats()[hung.Addr().String()].MirrorFallbacks; n < 3 {
		t.Errorf("%d mirror fallbacks counted, want at least the 3 reads", n)
	}
	// the wrapper saw the requests to both hosts
	for _, h := range []string{up.Host, hung.Addr().String()} {
		if n, ok := wrapped.Load(h); !ok || n.(*atomic.Int64).Load() == 0 {
			t.Errorf("WrapTransport's wrapper saw no request to %s", h)
		}
	}
}

type roundTripper func(*http.Request) (*http.Response, error)

func (f roundTripper) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }
