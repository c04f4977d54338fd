package fetcher

import (
	"context"
	"encoding/base64"
	"fmt"
	"slices"
	"strings"
	"sync"

	"github.com/distribution/reference"
)

// PullAuth is the auth a CRI PullImage call carried (the fields of
// runtime.v1.AuthConfig that containerd uses). The zero value is an
// anonymous pull.
type PullAuth struct {
	Username      string `json:"username,omitempty"`
	Password      string `json:"password,omitempty"`
	Auth          string `json:"auth,omitempty"` // base64 "user:password"
	ServerAddress string `json:"server_address,omitempty"`
	IdentityToken string `json:"identity_token,omitempty"`
}

// credential returns what the auth gives for a request to host, as
// containerd's CRI plugin reads it: only for the server address when the
// auth names one; the username and password, else the identity token, else
// the decoded auth field.
func (a PullAuth) credential(host string) (credential, bool, error) {
	if a.ServerAddress != "" && normalizeServer(a.ServerAddress) != normalizeServer(host) {
		return credential{}, false, nil
	}
	switch {
	case a.Username != "":
		return credential{a.Username, a.Password}, true, nil
	case a.IdentityToken != "":
		return credential{"", a.IdentityToken}, true, nil
	case a.Auth != "":
		raw, err := base64.StdEncoding.DecodeString(a.Auth)
		if err != nil {
			return credential{}, false, fmt.Errorf("%w: pull auth: auth field: %w", ErrInvalid, err)
		}
		u, p, ok := strings.Cut(string(raw), ":")
		if !ok {
			return credential{}, false, fmt.Errorf("%w: pull auth: auth field: no colon", ErrInvalid)
		}
		return credential{u, p}, true, nil
	}
	return credential{}, false, nil
}

// PullAuths keeps the auth of each CRI image pull in memory, per image
// repository (host and path, whatever the tag or digest), for the lazy
// fetches of that image's layers: a CredentialSource. A pull replaces the
// repository's auth (an anonymous pull replaces it with none); Revert
// undoes a replacement whose pull failed, so that a wrong secret leaves
// nothing behind. Nothing is written anywhere: the auths live as long as
// the process. It is safe for concurrent use.
type PullAuths struct {
	mu  sync.Mutex
	gen uint64
	m   map[string]*pullEntry
}

type pullEntry struct {
	auth PullAuth
	gen  uint64
	prev *pullEntry // what Set replaced (its own prev dropped), for Revert
}

var _ CredentialSource = (*PullAuths)(nil)

func NewPullAuths() *PullAuths { return &PullAuths{m: map[string]*pullEntry{}} }

// repositoryOf is the key of image: its normalized repository name.
func repositoryOf(image string) (string, error) {
	n, err := reference.ParseDockerRef(image)
	if err != nil {
		return "", fmt.Errorf("%w: image %q: %w", ErrInvalid, image, err)
	}
	return n.Name(), nil
}

// Set makes auth the image's repository's auth and returns the
// replacement's generation, for Revert.
func (p *PullAuths) Set(image string, auth PullAuth) (uint64, error) {
	key, err := repositoryOf(image)
	if err != nil {
		return 0, err
	}
	if _, _, err := auth.credential(""); err != nil {
		return 0, err
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.gen++
	e := &pullEntry{auth: auth, gen: p.gen}
	if cur := p.m[key]; cur != nil {
		e.prev = &pullEntry{auth: cur.auth, gen: cur.gen}
	}
	p.m[key] = e
	return e.gen, nil
}

// Revert undoes the Set of generation gen, unless a later Set has
// replaced it since.
func (p *PullAuths) Revert(image string, gen uint64) error {
	key, err := repositoryOf(image)
	if err != nil {
		return err
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	cur := p.m[key]
	if cur == nil || cur.gen != gen {
		return nil
	}
	if cur.prev == nil {
		delete(p.m, key)
	} else {
		p.m[key] = cur.prev
	}
	return nil
}

// Repositories names the repositories that have an auth, sorted (for
// status: the names only, never the auths).
func (p *PullAuths) Repositories() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	var out []string
	for k, e := range p.m {
		if e.auth != (PullAuth{}) {
			out = append(out, k)
		}
	}
	slices.Sort(out)
	return out
}

// Credentials is the auth of ref's repository's last pull, for host.
func (p *PullAuths) Credentials(_ context.Context, ref, host string, _ bool) (string, string, bool, error) {
	if ref == "" {
		return "", "", false, nil
	}
	key, err := repositoryOf(ref)
	if err != nil {
		return "", "", false, nil // not an image reference the CRI would have pulled
	}
	p.mu.Lock()
	e := p.m[key]
	p.mu.Unlock()
	if e == nil {
		return "", "", false, nil
	}
	c, ok, err := e.auth.credential(host)
	return c.user, c.secret, ok, err
}
