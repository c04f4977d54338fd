package credprovider

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// testPlugin is a credential provider plugin: it records its request,
// arguments and runs in $STATE and answers with the password in
// $STATE/password, the cache key type in $STATE/keytype and, when
// $STATE/duration exists, that cacheDuration; $STATE/fail makes it fail.
const testPlugin = `#!/bin/sh
cat > "$STATE/request.json"
echo "$*" > "$STATE/args"
echo run >> "$STATE/runs"
if [ -f "$STATE/fail" ]; then echo "plugin broke: $(cat "$STATE/fail")" >&2; exit 3; fi
if [ -f "$STATE/garbage" ]; then echo "{not json secret-ish"; exit 0; fi
pass=$(cat "$STATE/password")
keytype=$(cat "$STATE/keytype" 2>/dev/null || echo Image)
dur=""
if [ -f "$STATE/duration" ]; then dur=",\"cacheDuration\":\"$(cat "$STATE/duration")\""; fi
version=$(cat "$STATE/version" 2>/dev/null || echo credentialprovider.kubelet.k8s.io/v1)
printf '{"apiVersion":"%s","kind":"CredentialProviderResponse","cacheKeyType":"%s"%s,"auth":{"reg.example.com:5000":{"username":"reg","password":"%s"},"reg.example.com:5000/team":{"username":"team","password":"%s"}}}\n' "$version" "$keytype" "$dur" "$pass" "$pass"
`

const testConfig = `apiVersion: kubelet.config.k8s.io/v1
kind: CredentialProviderConfig
providers:
  - name: test-plugin
    matchImages:
      - "*.example.com:5000"
    defaultCacheDuration: 1h
    apiVersion: credentialprovider.kubelet.k8s.io/v1
    args: ["--flag", "x"]
    env:
      - name: STATE
        value: STATEDIR
`

type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

type pluginEnv struct {
	t     *testing.T
	state string
	ps    *Providers
	clock *fakeClock
}

func newPluginEnv(t *testing.T) *pluginEnv {
	t.Helper()
	dir := t.TempDir()
	bin, state := filepath.Join(dir, "bin"), filepath.Join(dir, "state")
	must(t, os.MkdirAll(bin, 0o755))
	must(t, os.MkdirAll(state, 0o755))
	must(t, os.WriteFile(filepath.Join(bin, "test-plugin"), []byte(testPlugin), 0o755))
	cfg := filepath.Join(dir, "config.yaml")
	must(t, os.WriteFile(cfg, []byte(strings.ReplaceAll(testConfig, "STATEDIR", state)), 0o600))
	ps, err := Load(cfg, bin)
	if err != nil {
		t.Fatal(err)
	}
	clock := &fakeClock{t: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	ps.providers[0].now = clock.Now
	e := &pluginEnv{t: t, state: state, ps: ps, clock: clock}
	e.write("password", "pw1")
	return e
}

func (e *pluginEnv) write(name, content string) {
	must(e.t, os.WriteFile(filepath.Join(e.state, name), []byte(content), 0o600))
}

func (e *pluginEnv) remove(name string) { must(e.t, os.Remove(filepath.Join(e.state, name))) }

func (e *pluginEnv) runs() int {
	b, err := os.ReadFile(filepath.Join(e.state, "runs"))
	if errors.Is(err, os.ErrNotExist) {
		return 0
	}
	must(e.t, err)
	return strings.Count(string(b), "run")
}

// lookup asks for image's credentials for its registry.
func (e *pluginEnv) lookup(image string, refresh bool) (string, string, bool, error) {
	return e.ps.Credentials(context.Background(), image, "reg.example.com:5000", refresh)
}

// expect checks a lookup's answer and the plugin's total number of runs.
func (e *pluginEnv) expect(step, image string, refresh bool, wantUser, wantPass string, wantRuns int) {
	e.t.Helper()
	u, p, ok, err := e.lookup(image, refresh)
	if err != nil || !ok || u != wantUser || p != wantPass {
		e.t.Fatalf("%s: got %q %q %v %v, want %q %q", step, u, p, ok, err, wantUser, wantPass)
	}
	if n := e.runs(); n != wantRuns {
		e.t.Fatalf("%s: plugin ran %d times, want %d", step, n, wantRuns)
	}
}

const (
	teamImage  = "reg.example.com:5000/team/app:v1"
	otherImage = "reg.example.com:5000/other/app:v1"
)

// TestPluginProtocol: what the plugin is given (request on stdin, args,
// env) and how its answer is read (the most specific matching key).
func TestPluginProtocol(t *testing.T) {
	e := newPluginEnv(t)
	e.expect("team image", teamImage, false, "team", "pw1", 1)
	var req map[string]any
	b, err := os.ReadFile(filepath.Join(e.state, "request.json"))
	must(t, err)
	must(t, json.Unmarshal(b, &req))
	if req["apiVersion"] != "credentialprovider.kubelet.k8s.io/v1" || req["kind"] != "CredentialProviderRequest" || req["image"] != teamImage {
		t.Fatalf("request %s", b)
	}
	if args, _ := os.ReadFile(filepath.Join(e.state, "args")); strings.TrimSpace(string(args)) != "--flag x" {
		t.Fatalf("args %q", args)
	}
	e.expect("other repository: the registry's key", otherImage, false, "reg", "pw1", 2)
	// requests to a mirror or blob storage get nothing, and run nothing
	if _, _, ok, err := e.ps.Credentials(context.Background(), teamImage, "mirror.example.com:5000", false); ok || err != nil {
		t.Fatalf("mirror host: %v %v", ok, err)
	}
	// an image no provider matches
	if _, _, ok, err := e.ps.Credentials(context.Background(), "elsewhere.org/app:v1", "elsewhere.org", false); ok || err != nil || e.runs() != 2 {
		t.Fatalf("unmatched image: %v %v, %d runs", ok, err, e.runs())
	}
}

// TestPluginCache: answers are cached per cacheKeyType for cacheDuration
// (else defaultCacheDuration), a zero duration is not cached, and a
// refresh runs the plugin whatever the cache holds.
func TestPluginCache(t *testing.T) {
	e := newPluginEnv(t)
	e.expect("first", teamImage, false, "team", "pw1", 1)
	e.write("password", "pw2") // rotated at the source
	e.expect("cached", teamImage, false, "team", "pw1", 1)
	e.clock.add(59 * time.Minute)
	e.expect("within defaultCacheDuration", teamImage, false, "team", "pw1", 1)
	e.clock.add(2 * time.Minute)
	e.expect("expired", teamImage, false, "team", "pw2", 2)
	e.expect("Image key: another image runs the plugin", otherImage, false, "reg", "pw2", 3)

	e.write("password", "pw3")
	e.expect("refresh", teamImage, true, "team", "pw3", 4)
	e.expect("refreshed answer cached", teamImage, false, "team", "pw3", 4)

	e.write("keytype", "Registry")
	e.write("duration", "10m")
	e.clock.add(2 * time.Hour)
	e.expect("Registry key", teamImage, false, "team", "pw3", 5)
	e.expect("Registry key: another image of the registry from the cache", otherImage, false, "reg", "pw3", 5)
	e.clock.add(11 * time.Minute)
	e.expect("the answer's cacheDuration", otherImage, false, "reg", "pw3", 6)

	e.write("keytype", "Global")
	e.write("duration", "0s")
	e.clock.add(11 * time.Minute)
	e.expect("zero duration", teamImage, false, "team", "pw3", 7)
	e.expect("zero duration: not cached", teamImage, false, "team", "pw3", 8)
}

// TestPluginFailures: a failing or malformed plugin fails the lookup with
// ErrPlugin, its stderr but none of its output in the error; the failure
// is not run again for FailureBackoff, no answer is cached.
func TestPluginFailures(t *testing.T) {
	tests := []struct {
		name    string
		file    string
		content string
		want    string
	}{
		{name: "exit status", file: "fail", content: "no token", want: "plugin broke: no token"},
		{name: "not JSON", file: "garbage", content: "1", want: "malformed answer"},
		{name: "other apiVersion", file: "version", content: "credentialprovider.kubelet.k8s.io/v1beta1", want: `answered apiVersion "credentialprovider.kubelet.k8s.io/v1beta1"`},
		{name: "bad cacheKeyType", file: "keytype", content: "Pod", want: `cacheKeyType "Pod"`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := newPluginEnv(t)
			e.write(tc.file, tc.content)
			_, _, ok, err := e.lookup(teamImage, false)
			if ok || !errors.Is(err, ErrPlugin) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v %v, want ErrPlugin with %q", ok, err, tc.want)
			}
			if strings.Contains(err.Error(), "pw1") || strings.Contains(err.Error(), "secret-ish") {
				t.Fatalf("error quotes the plugin's output: %v", err)
			}
			e.remove(tc.file)
			// the failure answers for FailureBackoff, without a run
			if _, _, ok, err2 := e.lookup(teamImage, false); ok || err2 == nil || e.runs() != 1 {
				t.Fatalf("within the backoff: %v %v, %d runs", ok, err2, e.runs())
			}
			e.clock.add(FailureBackoff + time.Second)
			e.expect("after the backoff", teamImage, false, "team", "pw1", 2)
		})
	}
}

func TestLoadErrors(t *testing.T) {
	good := `apiVersion: kubelet.config.k8s.io/v1
kind: CredentialProviderConfig
providers:
  - name: test-plugin
    matchImages: ["*.example.com"]
    defaultCacheDuration: 5m
    apiVersion: credentialprovider.kubelet.k8s.io/v1
`
	tests := []struct {
		name, config, want string
	}{
		{name: "valid", config: good},
		{name: "json", config: `{"apiVersion":"kubelet.config.k8s.io/v1","kind":"CredentialProviderConfig","providers":[{"name":"test-plugin","matchImages":["x.io"],"defaultCacheDuration":"1m","apiVersion":"credentialprovider.kubelet.k8s.io/v1"}]}`},
		{name: "kind", config: strings.Replace(good, "kind: CredentialProviderConfig", "kind: KubeletConfiguration", 1), want: "kind"},
		{name: "no providers", config: "apiVersion: kubelet.config.k8s.io/v1\nkind: CredentialProviderConfig\n", want: "no providers"},
		{name: "path in name", config: strings.Replace(good, "name: test-plugin", "name: ../test-plugin", 1), want: "not a file name"},
		{name: "missing plugin", config: strings.Replace(good, "name: test-plugin", "name: absent", 1), want: "no executable"},
		{name: "no matchImages", config: strings.Replace(good, `matchImages: ["*.example.com"]`, "matchImages: []", 1), want: "no matchImages"},
		{name: "no defaultCacheDuration", config: strings.Replace(good, "defaultCacheDuration: 5m\n", "", 1), want: "defaultCacheDuration"},
		{name: "protocol version", config: strings.Replace(good, "apiVersion: credentialprovider.kubelet.k8s.io/v1", "apiVersion: credentialprovider.kubelet.k8s.io/v2", 1), want: "apiVersion"},
		{name: "service account tokens", config: good + "    tokenAttributes:\n      serviceAccountTokenAudience: x\n", want: "tokenAttributes"},
		{name: "not YAML", config: "providers: [", want: "config"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			must(t, os.WriteFile(filepath.Join(dir, "test-plugin"), []byte(testPlugin), 0o755))
			p := filepath.Join(dir, "config.yaml")
			must(t, os.WriteFile(p, []byte(tc.config), 0o600))
			_, err := Load(p, dir)
			if tc.want == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if !errors.Is(err, ErrConfig) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want ErrConfig with %q", err, tc.want)
			}
		})
	}
}

func TestURLsMatch(t *testing.T) {
	tests := []struct {
		glob, target string
		want         bool
	}{
		{"*.registry.io", "abc.registry.io/app:v1", true},
		{"*.registry.io", "registry.io/app", false},
		{"*.registry.io", "a.b.registry.io/app", false},
		{"*.*.registry.io", "a.b.registry.io/app", true},
		{"registry.io:5000", "registry.io:5000/app", true},
		{"registry.io:5000", "registry.io/app", false},
		{"registry.io", "registry.io:5000/app", false},
		{"registry.io/team", "registry.io/team/app:v1", true},
		{"registry.io/team", "registry.io/other/app", false},
		{"123.dkr.ecr.*.amazonaws.com", "123.dkr.ecr.us-east-1.amazonaws.com/app", true},
		{"*.example.com:5000", "reg.example.com:5000/team/app:v1", true},
	}
	for _, tc := range tests {
		t.Run(tc.glob+" "+tc.target, func(t *testing.T) {
			got, err := urlsMatch(tc.glob, tc.target)
			if err != nil || got != tc.want {
				t.Fatalf("got %v %v, want %v", got, err, tc.want)
			}
		})
	}
}

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}
