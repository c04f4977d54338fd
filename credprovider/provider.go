package credprovider

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/distribution/reference"
	"golang.org/x/sync/singleflight"
	kubeletconfig "k8s.io/kubelet/config/v1"
	cpv1 "k8s.io/kubelet/pkg/apis/credentialprovider/v1"
	"sigs.k8s.io/yaml"
)

var (
	// ErrConfig: the credential provider config is malformed or invalid.
	ErrConfig = errors.New("credprovider: config")
	// ErrPlugin: a plugin failed or gave a malformed answer.
	ErrPlugin = errors.New("credprovider: plugin")
)

// PluginTimeout bounds one plugin run.
const PluginTimeout = time.Minute

// FailureBackoff is how long a plugin run's failure answers the lookups of
// its image (a refresh runs the plugin whatever): lazysnap looks
// credentials up per registry request, and a broken plugin must not be run
// for each.
const FailureBackoff = 10 * time.Second

// The configuration and protocol versions accepted (their types are the
// same); kubelet.config.k8s.io/v1 and credentialprovider.kubelet.k8s.io/v1
// are the current ones.
var (
	configVersions   = []string{"kubelet.config.k8s.io/v1", "kubelet.config.k8s.io/v1beta1", "kubelet.config.k8s.io/v1alpha1"}
	protocolVersions = []string{"credentialprovider.kubelet.k8s.io/v1", "credentialprovider.kubelet.k8s.io/v1beta1", "credentialprovider.kubelet.k8s.io/v1alpha1"}
)

// Providers are the plugins of one config. Create them with Load.
type Providers struct {
	providers []*provider
}

// provider is one plugin with its cache.
type provider struct {
	cfg    kubeletconfig.CredentialProvider
	bin    string
	now    func() time.Time
	flight singleflight.Group

	mu     sync.Mutex
	cache  map[string]cacheEntry // by cache key: the image, its registry, or "global"
	failed map[string]failure    // by image: the last run's failure, for FailureBackoff
}

type failure struct {
	err   error
	until time.Time
}

type cacheEntry struct {
	auth    map[string]cpv1.AuthConfig
	expires time.Time
}

const globalCacheKey = "global"

// Load reads the config at configPath (kubelet's
// --image-credential-provider-config) with the plugins in binDir
// (--image-credential-provider-bin-dir).
func Load(configPath, binDir string) (*Providers, error) {
	b, err := os.ReadFile(configPath)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrConfig, err)
	}
	var cfg kubeletconfig.CredentialProviderConfig
	if err := yaml.Unmarshal(b, &cfg); err != nil {
		return nil, fmt.Errorf("%w: %s: %w", ErrConfig, configPath, err)
	}
	if cfg.Kind != "CredentialProviderConfig" || !slices.Contains(configVersions, cfg.APIVersion) {
		return nil, fmt.Errorf("%w: %s: apiVersion %q kind %q, want kubelet.config.k8s.io/v1 CredentialProviderConfig", ErrConfig, configPath, cfg.APIVersion, cfg.Kind)
	}
	if len(cfg.Providers) == 0 {
		return nil, fmt.Errorf("%w: %s: no providers", ErrConfig, configPath)
	}
	ps := &Providers{}
	seen := map[string]bool{}
	for _, c := range cfg.Providers {
		if err := validate(c, seen); err != nil {
			return nil, fmt.Errorf("%w: %s: %w", ErrConfig, configPath, err)
		}
		bin := filepath.Join(binDir, c.Name)
		if st, err := os.Stat(bin); err != nil || st.IsDir() || st.Mode()&0o111 == 0 {
			return nil, fmt.Errorf("%w: %s: provider %q: no executable %s", ErrConfig, configPath, c.Name, bin)
		}
		ps.providers = append(ps.providers, &provider{cfg: c, bin: bin, now: time.Now, cache: map[string]cacheEntry{}, failed: map[string]failure{}})
	}
	return ps, nil
}

// validate checks a provider as kubelet does.
func validate(c kubeletconfig.CredentialProvider, seen map[string]bool) error {
	switch {
	case c.Name == "" || c.Name == "." || c.Name == ".." || strings.ContainsAny(c.Name, `/\`):
		return fmt.Errorf("provider name %q: not a file name", c.Name)
	case seen[c.Name]:
		return fmt.Errorf("provider %q twice", c.Name)
	case len(c.MatchImages) == 0:
		return fmt.Errorf("provider %q: no matchImages", c.Name)
	case c.DefaultCacheDuration == nil || c.DefaultCacheDuration.Duration < 0:
		return fmt.Errorf("provider %q: defaultCacheDuration missing or negative", c.Name)
	case !slices.Contains(protocolVersions, c.APIVersion):
		return fmt.Errorf("provider %q: apiVersion %q, want one of %v", c.Name, c.APIVersion, protocolVersions)
	case c.TokenAttributes != nil:
		return fmt.Errorf("provider %q: tokenAttributes (service account tokens) are not supported", c.Name)
	}
	for _, m := range c.MatchImages {
		if _, err := parseSchemeless(m); err != nil {
			return fmt.Errorf("provider %q: matchImages %q: %w", c.Name, m, err)
		}
	}
	seen[c.Name] = true
	return nil
}

// Credentials gives the credentials of the first provider matching ref
// with a credential for it, for requests to ref's registry; it is the
// fetcher's CredentialSource. refresh runs the plugins whatever their
// caches hold.
func (ps *Providers) Credentials(ctx context.Context, ref, host string, refresh bool) (string, string, bool, error) {
	if ref == "" {
		return "", "", false, nil
	}
	named, err := reference.ParseNormalizedNamed(ref)
	if err != nil {
		return "", "", false, nil
	}
	if registry := reference.Domain(named); !sameRegistry(registry, host) {
		return "", "", false, nil
	}
	var errs []error
	for _, p := range ps.providers {
		if !p.matches(ref) {
			continue
		}
		a, ok, err := p.lookup(ctx, ref, reference.Domain(named), refresh)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if ok {
			return a.Username, a.Password, true, nil
		}
	}
	return "", "", false, errors.Join(errs...)
}

// sameRegistry: the request goes to the image's registry (Docker Hub's
// names for itself are one).
func sameRegistry(registry, host string) bool {
	hub := func(h string) bool {
		return h == "docker.io" || h == "index.docker.io" || h == "registry-1.docker.io"
	}
	return registry == host || hub(registry) && hub(host)
}

func (p *provider) matches(image string) bool {
	for _, m := range p.cfg.MatchImages {
		if ok, _ := urlsMatch(m, image); ok {
			return true
		}
	}
	return false
}

// lookup is the credential for image from the cache, or from a plugin run.
func (p *provider) lookup(ctx context.Context, image, registry string, refresh bool) (cpv1.AuthConfig, bool, error) {
	if !refresh {
		if auth, ok := p.cached(image, registry); ok {
			a, found := pick(auth, image)
			return a, found, nil
		}
		p.mu.Lock()
		f, ok := p.failed[image]
		p.mu.Unlock()
		if ok && p.now().Before(f.until) {
			return cpv1.AuthConfig{}, false, f.err
		}
	}
	key := image
	if refresh {
		key += "\x00refresh"
	}
	ch := p.flight.DoChan(key, func() (any, error) {
		// a run that ended between the look at the cache above and
		// this flight has cached its answer
		if auth, ok := p.cached(image, registry); ok && !refresh {
			return auth, nil
		}
		auth, err := p.run(context.WithoutCancel(ctx), image, registry)
		p.mu.Lock()
		if err != nil {
			p.failed[image] = failure{err: err, until: p.now().Add(FailureBackoff)}
		} else {
			delete(p.failed, image)
		}
		p.mu.Unlock()
		return auth, err
	})
	select {
	case <-ctx.Done():
		return cpv1.AuthConfig{}, false, ctx.Err()
	case r := <-ch:
		if r.Err != nil {
			return cpv1.AuthConfig{}, false, r.Err
		}
		a, found := pick(r.Val.(map[string]cpv1.AuthConfig), image)
		return a, found, nil
	}
}

// cached returns the unexpired answer for image, looked up by image, then
// registry, then global key, as kubelet does.
func (p *provider) cached(image, registry string) (map[string]cpv1.AuthConfig, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	now := p.now()
	for _, k := range []string{image, registry, globalCacheKey} {
		if e, ok := p.cache[k]; ok {
			if now.Before(e.expires) {
				return e.auth, true
			}
			delete(p.cache, k)
		}
	}
	return nil, false
}

// run execs the plugin for image and caches its answer.
func (p *provider) run(ctx context.Context, image, registry string) (map[string]cpv1.AuthConfig, error) {
	ctx, cancel := context.WithTimeout(ctx, PluginTimeout)
	defer cancel()
	req, err := json.Marshal(cpv1.CredentialProviderRequest{
		TypeMeta: typeMeta(p.cfg.APIVersion, "CredentialProviderRequest"),
		Image:    image,
	})
	if err != nil {
		return nil, err
	}
	cmd := exec.CommandContext(ctx, p.bin, p.cfg.Args...)
	cmd.Env = os.Environ()
	for _, e := range p.cfg.Env {
		cmd.Env = append(cmd.Env, e.Name+"="+e.Value)
	}
	cmd.Stdin = bytes.NewReader(req)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		if ctx.Err() != nil {
			err = fmt.Errorf("%w after %s", ctx.Err(), PluginTimeout)
		}
		return nil, fmt.Errorf("%w %s for %s: %w: %s", ErrPlugin, p.cfg.Name, image, err, trim(stderr.String()))
	}
	resp, err := parseResponse(stdout.Bytes(), p.cfg.APIVersion)
	if err != nil {
		return nil, fmt.Errorf("%w %s for %s: %w", ErrPlugin, p.cfg.Name, image, err)
	}
	key := globalCacheKey
	switch resp.CacheKeyType {
	case cpv1.ImagePluginCacheKeyType:
		key = image
	case cpv1.RegistryPluginCacheKeyType:
		key = registry
	}
	d := p.cfg.DefaultCacheDuration.Duration
	if resp.CacheDuration != nil {
		d = resp.CacheDuration.Duration
	}
	p.mu.Lock()
	if d > 0 {
		p.cache[key] = cacheEntry{auth: resp.Auth, expires: p.now().Add(d)}
	} else {
		delete(p.cache, key)
	}
	p.mu.Unlock()
	return resp.Auth, nil
}

// parseResponse reads and checks a plugin's answer to a request of
// apiVersion. Its errors quote nothing of the answer but the fields that
// hold no secret.
func parseResponse(out []byte, apiVersion string) (cpv1.CredentialProviderResponse, error) {
	var resp cpv1.CredentialProviderResponse
	if err := json.Unmarshal(out, &resp); err != nil {
		// the answer may hold credentials: quote nothing of it
		return resp, fmt.Errorf("malformed answer (%d bytes): %T", len(out), err)
	}
	if resp.APIVersion != apiVersion || resp.Kind != "CredentialProviderResponse" {
		return resp, fmt.Errorf("answered apiVersion %q kind %q, want %s CredentialProviderResponse", trim(resp.APIVersion), trim(resp.Kind), apiVersion)
	}
	switch resp.CacheKeyType {
	case cpv1.ImagePluginCacheKeyType, cpv1.RegistryPluginCacheKeyType, cpv1.GlobalPluginCacheKeyType:
	default:
		return resp, fmt.Errorf("cacheKeyType %q, want Image, Registry or Global", trim(string(resp.CacheKeyType)))
	}
	if resp.CacheDuration != nil && resp.CacheDuration.Duration < 0 {
		return resp, fmt.Errorf("negative cacheDuration %s", resp.CacheDuration.Duration)
	}
	for k := range resp.Auth {
		if _, err := parseSchemeless(k); err != nil {
			return resp, fmt.Errorf("auth key %q: not an image pattern", trim(k))
		}
	}
	return resp, nil
}

// pick is the credential of the most specific key of auth matching image:
// kubelet's keyring tries the keys in reverse lexicographic order.
func pick(auth map[string]cpv1.AuthConfig, image string) (cpv1.AuthConfig, bool) {
	keys := make([]string, 0, len(auth))
	for k := range auth {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	slices.Reverse(keys)
	for _, k := range keys {
		if ok, _ := urlsMatch(k, image); ok {
			return auth[k], true
		}
	}
	return cpv1.AuthConfig{}, false
}

func trim(s string) string {
	s = strings.TrimSpace(s)
	if len(s) > 512 {
		s = s[:512] + "..."
	}
	return s
}
