// Package registry runs a real OCI registry (Debian's docker-registry, the
// CNCF distribution server) on loopback for tests, pushes blobs and manifests
// into it over plain net/http, writes containerd hosts directories that point
// at it, and provides a WAN-emulating reverse proxy (WANProxy) that adds
// round-trip delay and a bandwidth cap and counts requests and bytes.
//
// It is for tests and benchmarks only. Start skips the test when the
// registry binary is missing, unless LAZYSNAP_REQUIRE_INTEGRATION=1.
package registry

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/lazysnap/lazysnap/internal/testenv"
	"golang.org/x/crypto/bcrypt"
)

// DefaultBinary is where Debian's docker-registry package installs the
// distribution server.
const DefaultBinary = "/usr/bin/docker-registry"

// Options configures a registry started by Start.
type Options struct {
	// Username and Password, when both set, enable htpasswd basic auth.
	Username, Password string
	// TLS serves HTTPS with a certificate signed by a freshly generated
	// self-signed CA (see Registry.CAFile).
	TLS bool
	// Proxy, when set, makes the registry a pull-through cache of another
	// registry (distribution's proxy.remoteurl).
	Proxy *ProxyOptions
	// Binary overrides DefaultBinary.
	Binary string
}

// ProxyOptions configures a pull-through cache registry.
type ProxyOptions struct {
	RemoteURL          string // e.g. "https://127.0.0.1:5000"
	Username, Password string // credentials for the remote, optional
	// CAFile is a PEM bundle the proxy trusts for an HTTPS remote
	// (passed to the subprocess as SSL_CERT_FILE).
	CAFile string
}

// Registry is one running (or stopped) registry subprocess.
type Registry struct {
	// Host is "127.0.0.1:<port>"; the port stays the same across Restart.
	Host string
	// Scheme is "http" or "https".
	Scheme string
	// CAFile is the PEM path of the CA that signed the server certificate
	// ("" without TLS).
	CAFile string
	// RootDir is the registry's filesystem storage root.
	RootDir string
	// Username and Password are the htpasswd credentials ("" without auth).
	Username, Password string

	tb         testing.TB
	binary     string
	dir        string
	configPath string
	logPath    string
	htpasswd   string // "" without auth
	env        []string
	client     *http.Client

	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan struct{}
}

// Start writes a distribution config into t.TempDir(), starts the registry
// on a free loopback port, waits until /v2/ answers and registers a cleanup
// that stops it.
func Start(tb testing.TB, opts Options) *Registry {
	tb.Helper()
	bin := opts.Binary
	if bin == "" {
		bin = DefaultBinary
	}
	if _, err := os.Stat(bin); err != nil {
		testenv.Unavailable(tb, "registry binary %s not available (%v): install Debian package docker-registry", bin, err)
	}
	dir := tb.TempDir()
	r := &Registry{
		tb:       tb,
		binary:   bin,
		dir:      dir,
		RootDir:  filepath.Join(dir, "storage"),
		Scheme:   "http",
		Username: opts.Username,
		Password: opts.Password,
		logPath:  filepath.Join(dir, "registry.log"),
	}
	port, err := freePort()
	if err != nil {
		tb.Fatalf("registry: free port: %v", err)
	}
	r.Host = fmt.Sprintf("127.0.0.1:%d", port)

	cfg, err := r.writeFiles(opts)
	if err != nil {
		tb.Fatalf("registry: %v", err)
	}
	r.configPath = filepath.Join(dir, "config.yml")
	if err := os.WriteFile(r.configPath, []byte(cfg), 0o600); err != nil {
		tb.Fatalf("registry: %v", err)
	}
	r.env = []string{"PATH=/usr/bin:/bin", "HOME=" + dir}
	if opts.Proxy != nil && opts.Proxy.CAFile != "" {
		r.env = append(r.env, "SSL_CERT_FILE="+opts.Proxy.CAFile)
	}
	r.client, err = r.newClient()
	if err != nil {
		tb.Fatalf("registry: %v", err)
	}
	tb.Cleanup(r.Stop)
	if err := r.start(); err != nil {
		tb.Fatalf("registry: %v", err)
	}
	return r
}

// URL is "<scheme>://<host>".
func (r *Registry) URL() string { return r.Scheme + "://" + r.Host }

// Client is an HTTP client that trusts the registry's CA.
func (r *Registry) Client() *http.Client { return r.client }

// Log returns the registry's log output so far (for failure messages).
func (r *Registry) Log() string {
	b, _ := os.ReadFile(r.logPath)
	return string(b)
}

// Running reports whether the subprocess is alive.
func (r *Registry) Running() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.cmd == nil {
		return false
	}
	select {
	case <-r.done:
		return false
	default:
		return true
	}
}

// Stop stops the registry process (SIGTERM by its pid, SIGKILL after 3s)
// and waits for it to exit. The registry may finish responses in progress.
// It is idempotent. The storage directory is kept, so Restart serves the
// same content.
func (r *Registry) Stop() { r.signal(syscall.SIGTERM) }

// Kill kills the registry process (SIGKILL by its pid) and waits for it to
// exit: connections in progress break, as in a crash.
func (r *Registry) Kill() { r.signal(syscall.SIGKILL) }

func (r *Registry) signal(sig syscall.Signal) {
	r.mu.Lock()
	cmd, done := r.cmd, r.done
	r.cmd = nil
	r.mu.Unlock()
	if cmd == nil {
		return
	}
	_ = cmd.Process.Signal(sig)
	select {
	case <-done:
	case <-time.After(3 * time.Second):
		_ = cmd.Process.Kill()
		<-done
	}
}

// Restart stops the registry if it runs and starts it again on the same
// port with the same storage.
func (r *Registry) Restart() {
	r.tb.Helper()
	r.Stop()
	if err := r.start(); err != nil {
		r.tb.Fatalf("registry: restart: %v", err)
	}
}

func (r *Registry) start() error {
	logf, err := os.OpenFile(r.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	defer logf.Close()
	cmd := exec.Command(r.binary, "serve", r.configPath)
	cmd.Dir = r.dir
	cmd.Env = r.env
	cmd.Stdout = logf
	cmd.Stderr = logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	// The port may still be held briefly by a process that just exited.
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start %s: %w", r.binary, err)
	}
	done := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		close(done)
	}()
	r.mu.Lock()
	r.cmd, r.done = cmd, done
	r.mu.Unlock()

	deadline := time.Now().Add(20 * time.Second)
	for {
		select {
		case <-done:
			return fmt.Errorf("registry exited during start-up; log:\n%s", r.Log())
		default:
		}
		if r.ready() {
			return nil
		}
		if time.Now().After(deadline) {
			r.Stop()
			return fmt.Errorf("registry did not answer /v2/ within 20s; log:\n%s", r.Log())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (r *Registry) ready() bool {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, r.URL()+"/v2/", nil)
	if err != nil {
		return false
	}
	resp, err := r.client.Do(req)
	if err != nil {
		return false
	}
	resp.Body.Close()
	return resp.StatusCode == http.StatusOK || resp.StatusCode == http.StatusUnauthorized
}

// writeFiles writes htpasswd and TLS material and returns the config text.
func (r *Registry) writeFiles(opts Options) (string, error) {
	secret := make([]byte, 16)
	if _, err := rand.Read(secret); err != nil {
		return "", err
	}
	var b strings.Builder
	fmt.Fprintf(&b, "version: 0.1\nlog:\n  level: warn\n  accesslog:\n    disabled: true\n")
	fmt.Fprintf(&b, "storage:\n  filesystem:\n    rootdirectory: %q\n  delete:\n    enabled: true\n", r.RootDir)
	fmt.Fprintf(&b, "  maintenance:\n    uploadpurging:\n      enabled: false\n")
	fmt.Fprintf(&b, "http:\n  addr: %s\n  secret: %s\n", r.Host, hex.EncodeToString(secret))
	if opts.TLS {
		ca, err := NewCA()
		if err != nil {
			return "", err
		}
		r.CAFile = filepath.Join(r.dir, "ca.pem")
		if err := os.WriteFile(r.CAFile, ca.CertPEM, 0o600); err != nil {
			return "", err
		}
		certPEM, keyPEM, err := ca.Issue("127.0.0.1", "localhost")
		if err != nil {
			return "", err
		}
		certPath := filepath.Join(r.dir, "server.pem")
		keyPath := filepath.Join(r.dir, "server-key.pem")
		if err := os.WriteFile(certPath, certPEM, 0o600); err != nil {
			return "", err
		}
		if err := os.WriteFile(keyPath, keyPEM, 0o600); err != nil {
			return "", err
		}
		fmt.Fprintf(&b, "  tls:\n    certificate: %q\n    key: %q\n", certPath, keyPath)
		r.Scheme = "https"
	}
	if opts.Username != "" && opts.Password != "" {
		line, err := HtpasswdLine(opts.Username, opts.Password)
		if err != nil {
			return "", err
		}
		p := filepath.Join(r.dir, "htpasswd")
		if err := os.WriteFile(p, []byte(line+"\n"), 0o600); err != nil {
			return "", err
		}
		r.htpasswd = p
		fmt.Fprintf(&b, "auth:\n  htpasswd:\n    realm: lazysnap-test\n    path: %q\n", p)
	}
	if p := opts.Proxy; p != nil {
		fmt.Fprintf(&b, "proxy:\n  remoteurl: %q\n", p.RemoteURL)
		if p.Username != "" {
			fmt.Fprintf(&b, "  username: %q\n  password: %q\n", p.Username, p.Password)
		}
	}
	return b.String(), nil
}

func (r *Registry) newClient() (*http.Client, error) {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.Proxy = nil
	tr.MaxIdleConnsPerHost = 16
	if r.CAFile != "" {
		pem, err := os.ReadFile(r.CAFile)
		if err != nil {
			return nil, err
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, errors.New("bad CA PEM")
		}
		tr.TLSClientConfig = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	}
	return &http.Client{Transport: tr}, nil
}

// SetCredentials replaces the htpasswd credentials of a registry started
// with auth (a password rotation): Pusher and Username/Password use the new
// ones at once; the registry process reads the file when it starts (the
// distribution server 2.8 does not reload it), so the new credentials take
// effect at the next Restart.
func (r *Registry) SetCredentials(user, password string) error {
	if r.htpasswd == "" {
		return errors.New("registry: SetCredentials: started without auth")
	}
	if user == "" || password == "" {
		return errors.New("registry: SetCredentials: empty user or password")
	}
	line, err := HtpasswdLine(user, password)
	if err != nil {
		return fmt.Errorf("registry: SetCredentials: %w", err)
	}
	tmp := r.htpasswd + ".tmp"
	if err := os.WriteFile(tmp, []byte(line+"\n"), 0o600); err != nil {
		return fmt.Errorf("registry: SetCredentials: %w", err)
	}
	if err := os.Rename(tmp, r.htpasswd); err != nil {
		return fmt.Errorf("registry: SetCredentials: %w", err)
	}
	r.Username, r.Password = user, password
	return nil
}

// HtpasswdLine returns a "user:bcrypt-hash" line for an htpasswd file.
func HtpasswdLine(user, password string) (string, error) {
	h, err := bcrypt.GenerateFromPassword([]byte(password), bcrypt.MinCost)
	if err != nil {
		return "", err
	}
	return user + ":" + string(h), nil
}

// BlobPath is where a filesystem-backed registry stores a blob's data under
// its storage root. Tests use it to prove a pull-through cache stored a blob.
func (r *Registry) BlobPath(dgst string) string {
	alg, hexd, _ := strings.Cut(dgst, ":")
	if len(hexd) < 2 {
		return ""
	}
	return filepath.Join(r.RootDir, "docker", "registry", "v2", "blobs", alg, hexd[:2], hexd, "data")
}

// HasBlob reports whether the registry's storage holds the blob with the
// given content.
func (r *Registry) HasBlob(dgst string, want []byte) bool {
	b, err := os.ReadFile(r.BlobPath(dgst))
	return err == nil && bytes.Equal(b, want)
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}
