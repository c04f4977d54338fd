package fetcher

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"time"
)

// dockerHubServer is the key under which the docker CLI stores Docker Hub
// credentials.
const dockerHubServer = "https://index.docker.io/v1/"

// helperTimeout bounds one credential helper run.
const helperTimeout = 30 * time.Second

type dockerAuthEntry struct {
	Auth          string `json:"auth"`
	Username      string `json:"username"`
	Password      string `json:"password"`
	IdentityToken string `json:"identitytoken"`
}

type dockerConfigFile struct {
	Auths       map[string]dockerAuthEntry `json:"auths"`
	CredHelpers map[string]string          `json:"credHelpers"`
	CredsStore  string                     `json:"credsStore"`
}

// dockerCredentials looks up registry credentials in a Docker config file
// the way the docker CLI does: credHelpers[host], else credsStore, else
// auths. The file is read on every call.
type dockerCredentials struct {
	path string
}

// DockerCredentials returns a containerd docker authorizer's credentials
// function (config.HostOptions.Credentials) that looks registry hosts up in
// the Docker config file at path as the fetcher does: credHelpers[host],
// else credsStore, else auths, the file read on every call. An empty path
// or a missing file means no credentials.
func DockerCredentials(path string) func(host string) (string, string, error) {
	return dockerCredentials{path: path}.credentials
}

// credentials returns (username, secret) for a registry host as
// containerd's authorizer expects: an empty username with a secret means
// an identity (refresh) token. No entry yields ("", "", nil).
func (d dockerCredentials) credentials(host string) (string, string, error) {
	if d.path == "" {
		return "", "", nil
	}
	b, err := os.ReadFile(d.path)
	if errors.Is(err, os.ErrNotExist) {
		return "", "", nil
	}
	if err != nil {
		return "", "", fmt.Errorf("fetcher: docker config: %w", err)
	}
	var cfg dockerConfigFile
	if err := json.Unmarshal(b, &cfg); err != nil {
		return "", "", fmt.Errorf("fetcher: docker config %s: %w", d.path, err)
	}
	server := host
	if isDockerHub(host) {
		server = dockerHubServer
	}
	helper := ""
	for k, v := range cfg.CredHelpers {
		if normalizeServer(k) == normalizeServer(server) {
			helper = v
		}
	}
	if helper == "" {
		helper = cfg.CredsStore
	}
	if helper != "" {
		user, secret, found, err := runCredentialHelper(helper, server)
		if err != nil {
			return "", "", err
		}
		if found {
			return user, secret, nil
		}
	}
	for k, e := range cfg.Auths {
		if normalizeServer(k) != normalizeServer(server) {
			continue
		}
		user, pass := e.Username, e.Password
		if e.Auth != "" {
			raw, err := base64.StdEncoding.DecodeString(e.Auth)
			if err != nil {
				return "", "", fmt.Errorf("fetcher: docker config %s: auth for %s: %w", d.path, k, err)
			}
			u, p, ok := strings.Cut(string(raw), ":")
			if !ok {
				return "", "", fmt.Errorf("fetcher: docker config %s: auth for %s: no colon", d.path, k)
			}
			user, pass = u, p
		}
		if e.IdentityToken != "" {
			return "", e.IdentityToken, nil
		}
		return user, pass, nil
	}
	return "", "", nil
}

// dockerSource is the Docker config as a CredentialSource. It answers from
// memory while the file is unchanged (same size, modification time and
// inode), so that a credential helper does not run per request; a refresh
// reads the file and runs the helper again. A failure (a helper that
// fails) is remembered for FailureBackoff, so that it is not run again
// for every request meanwhile.
type dockerSource struct {
	d   dockerCredentials
	now func() time.Time // nil: time.Now

	mu    sync.Mutex
	sig   fileSig
	cache map[string]dockerAnswer // by host
}

type dockerAnswer struct {
	c     credential
	err   error
	until time.Time // for an error: when to try again
}

type fileSig struct {
	size, ino int64
	mtime     time.Time
}

// FailureBackoff is how long a credential source that failed (a Docker
// credential helper, a credential provider plugin) is not run again,
// unless credentials are refreshed.
const FailureBackoff = 10 * time.Second

var _ CredentialSource = (*dockerSource)(nil)

func (s *dockerSource) Credentials(_ context.Context, _, host string, refresh bool) (string, string, bool, error) {
	if s.d.path == "" {
		return "", "", false, nil
	}
	st, err := os.Stat(s.d.path)
	if errors.Is(err, os.ErrNotExist) {
		return "", "", false, nil
	}
	if err != nil {
		return "", "", false, fmt.Errorf("fetcher: docker config: %w", err)
	}
	sig := fileSig{size: st.Size(), mtime: st.ModTime()}
	if sys, ok := st.Sys().(*syscall.Stat_t); ok {
		sig.ino = int64(sys.Ino)
	}
	now := time.Now()
	if s.now != nil {
		now = s.now()
	}
	s.mu.Lock()
	if sig != s.sig || s.cache == nil {
		s.sig, s.cache = sig, map[string]dockerAnswer{}
	}
	a, ok := s.cache[host]
	s.mu.Unlock()
	if !ok || refresh || a.err != nil && now.After(a.until) {
		u, p, err := s.d.credentials(host)
		a = dockerAnswer{c: credential{u, p}, err: err, until: now.Add(FailureBackoff)}
		s.mu.Lock()
		if s.sig == sig {
			s.cache[host] = a
		}
		s.mu.Unlock()
	}
	if a.err != nil {
		return "", "", false, a.err
	}
	return a.c.user, a.c.secret, a.c != credential{}, nil
}

// runCredentialHelper runs "docker-credential-<helper> get" with the server
// on stdin (the docker credential helper protocol).
func runCredentialHelper(helper, server string) (user, secret string, found bool, err error) {
	ctx, cancel := context.WithTimeout(context.Background(), helperTimeout)
	defer cancel()
	name := "docker-credential-" + helper
	cmd := exec.CommandContext(ctx, name, "get")
	cmd.Stdin = strings.NewReader(server)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		out := strings.TrimSpace(stdout.String() + stderr.String())
		if strings.Contains(out, "credentials not found") {
			return "", "", false, nil
		}
		return "", "", false, fmt.Errorf("fetcher: credential helper %s for %s: %w: %s", name, server, err, out)
	}
	var resp struct {
		Username string `json:"Username"`
		Secret   string `json:"Secret"`
	}
	if err := json.Unmarshal(stdout.Bytes(), &resp); err != nil {
		return "", "", false, fmt.Errorf("fetcher: credential helper %s for %s: bad output: %w", name, server, err)
	}
	if resp.Username == "<token>" {
		return "", resp.Secret, true, nil
	}
	return resp.Username, resp.Secret, true, nil
}

// normalizeServer reduces a docker config key or server to a host name:
// "https://host:5000/v1/" -> "host:5000"; Docker Hub aliases map to one key.
func normalizeServer(s string) string {
	s = strings.TrimPrefix(strings.TrimPrefix(s, "https://"), "http://")
	if i := strings.IndexByte(s, '/'); i >= 0 {
		s = s[:i]
	}
	if isDockerHub(s) {
		return "index.docker.io"
	}
	return s
}

func isDockerHub(host string) bool {
	switch host {
	case "docker.io", "index.docker.io", "registry-1.docker.io":
		return true
	}
	return false
}
