package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/lazysnap/lazysnap/internal/testenv/registry"
)

// testCredentialPlugin is a kubelet credential provider plugin answering
// with the password in $STATE/password for the registry, counting its
// runs in $STATE/runs.
const testCredentialPlugin = `#!/bin/sh
cat >/dev/null
echo run >> "$STATE/runs"
printf '{"apiVersion":"credentialprovider.kubelet.k8s.io/v1","kind":"CredentialProviderResponse","cacheKeyType":"Registry","auth":{"%s":{"username":"alice","password":"%s"}}}\n' "$REGISTRY" "$(cat "$STATE/password")"
`

// TestCredentialProviderE2E: lazysnap's fetches take their credentials
// from a kubelet credential provider plugin, configured as kubelet's.
// Its answer is cached (defaultCacheDuration: an hour); when the
// registry's password changes under a running container, the refused
// request runs the plugin again and the read succeeds with the new
// password, without waiting for the cache to expire.
func TestCredentialProviderE2E(t *testing.T) {
	dir := t.TempDir()
	bin, state := filepath.Join(dir, "bin"), filepath.Join(dir, "state")
	for _, d := range []string{bin, state} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(bin, "test-credential-plugin"), []byte(testCredentialPlugin), 0o755); err != nil {
		t.Fatal(err)
	}
	writeState := func(name, v string) {
		if err := os.WriteFile(filepath.Join(state, name), []byte(v), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	runs := func() int {
		b, _ := os.ReadFile(filepath.Join(state, "runs"))
		return strings.Count(string(b), "run")
	}
	reg := registry.Start(t, registry.Options{TLS: true, Username: "alice", Password: "first-password"})
	writeState("password", "first-password")
	cpConfig := filepath.Join(dir, "credential-providers.yaml")
	if err := os.WriteFile(cpConfig, []byte(fmt.Sprintf(`apiVersion: kubelet.config.k8s.io/v1
kind: CredentialProviderConfig
providers:
  - name: test-credential-plugin
    matchImages: [%q]
    defaultCacheDuration: 1h
    apiVersion: credentialprovider.kubelet.k8s.io/v1
    env:
      - {name: STATE, value: %q}
      - {name: REGISTRY, value: %q}
`, reg.Host, state, reg.Host)), 0o600); err != nil {
		t.Fatal(err)
	}
	s := startStack(t, fmt.Sprintf("  credential_provider_config = %q\n  credential_provider_bin_dir = %q\n[fetch]\n  no_background = true\n  timeout = \"20s\"\n", cpConfig, bin))
	if _, err := registry.WriteHostsConfig(s.hosts, reg.Host, reg.Endpoint(), reg.Endpoint()); err != nil {
		t.Fatal(err)
	}
	authStack := *s
	authStack.reg = reg
	_, layout := buildImages(t, "credential provider")
	ref, _ := authStack.pushLayout(t, layout, "private/busybox", "v1")
	// containerd resolves with --user; lazysnap's fetches use the plugin
	if out := s.pull(t, ref, "--user", "alice:first-password"); !strings.Contains(out, "2 of 2 layers lazy") {
		t.Fatalf("pull: %s\nlazysnap log:\n%s", out, s.log())
	}
	s.runSleeper(t, ref, "provider")
	// the mounts asked for the image by its reference and its repository:
	// a run each at most; from then on the cached answer serves
	mounted := runs()
	if mounted < 1 || mounted > 2 {
		t.Fatalf("the plugin ran %d times for the mounts\nlazysnap log:\n%s", mounted, s.log())
	}
	sums := dataSums(t)
	if got := s.readSum(t, "provider", "/data/other", sums.other); got != "ok" {
		t.Fatalf("read: %s\nlazysnap log:\n%s", got, s.log())
	}
	if n := runs(); n != mounted {
		t.Fatalf("the plugin ran %d times, want %d: its answer is cached for an hour", n, mounted)
	}

	if err := reg.SetCredentials("alice", "second-password"); err != nil {
		t.Fatal(err)
	}
	reg.Restart()
	writeState("password", "second-password")
	if got := s.readSum(t, "provider", "/data/big", sums.big); got != "ok" {
		t.Fatalf("read after the rotation: %s\nlazysnap log:\n%s", got, s.log())
	}
	if n := runs(); n <= mounted {
		t.Fatalf("the plugin ran %d times: the refused request did not run it again", n)
	}
	for _, secret := range []string{"first-password", "second-password"} {
		if strings.Contains(s.log(), secret) {
			t.Errorf("lazysnap's logs hold the secret %q", secret)
		}
	}
}
