package fetcher

import (
	"encoding/base64"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

const testHelperScript = `#!/bin/sh
read server
case "$server" in
  reg.example:5000) echo '{"ServerURL":"reg.example:5000","Username":"helperuser","Secret":"helperpass"}' ;;
  tok.example) echo '{"ServerURL":"tok.example","Username":"<token>","Secret":"idtoken"}' ;;
  https://index.docker.io/v1/) echo '{"Username":"hubuser","Secret":"hubpass"}' ;;
  broken.example) echo "helper exploded" >&2; exit 1 ;;
  *) echo "credentials not found in native keychain"; exit 1 ;;
esac
`

// installCredentialHelper puts docker-credential-<name> on PATH.
func installCredentialHelper(t *testing.T, name, script string) {
	t.Helper()
	dir := t.TempDir()
	must(t, os.WriteFile(filepath.Join(dir, "docker-credential-"+name), []byte(script), 0o755))
	t.Setenv("PATH", dir+string(os.PathListSeparator)+os.Getenv("PATH"))
}

func writeDockerConfig(t testing.TB, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "config.json")
	must(t, os.WriteFile(p, []byte(content), 0o600))
	return p
}

func basicAuth(user, pass string) string {
	return base64.StdEncoding.EncodeToString([]byte(user + ":" + pass))
}

func TestDockerCredentials(t *testing.T) {
	installCredentialHelper(t, "test", testHelperScript)
	tests := []struct {
		name       string
		config     string // "" = no file
		host       string
		user, pass string
		wantErr    string
	}{
		{name: "no config file", host: "reg.example:5000"},
		{name: "auths base64", config: `{"auths":{"reg.example:5000":{"auth":"` + basicAuth("alice", "pa:ss") + `"}}}`,
			host: "reg.example:5000", user: "alice", pass: "pa:ss"},
		{name: "auths username/password", config: `{"auths":{"reg.example:5000":{"username":"bob","password":"pw"}}}`,
			host: "reg.example:5000", user: "bob", pass: "pw"},
		{name: "auths key with scheme and path", config: `{"auths":{"https://reg.example:5000/v2/":{"auth":"` + basicAuth("carol", "x") + `"}}}`,
			host: "reg.example:5000", user: "carol", pass: "x"},
		{name: "auths identity token", config: `{"auths":{"reg.example":{"auth":"` + basicAuth("u", "p") + `","identitytoken":"refresh"}}}`,
			host: "reg.example", user: "", pass: "refresh"},
		{name: "docker hub alias", config: `{"auths":{"https://index.docker.io/v1/":{"auth":"` + basicAuth("hub", "h") + `"}}}`,
			host: "registry-1.docker.io", user: "hub", pass: "h"},
		{name: "other host has no entry", config: `{"auths":{"reg.example:5000":{"auth":"` + basicAuth("alice", "x") + `"}}}`,
			host: "other.example"},
		{name: "credHelpers", config: `{"credHelpers":{"reg.example:5000":"test"}}`,
			host: "reg.example:5000", user: "helperuser", pass: "helperpass"},
		{name: "credHelpers identity token", config: `{"credHelpers":{"tok.example":"test"}}`,
			host: "tok.example", user: "", pass: "idtoken"},
		{name: "credsStore for docker hub", config: `{"credsStore":"test"}`,
			host: "docker.io", user: "hubuser", pass: "hubpass"},
		{name: "credHelpers beats credsStore and auths", config: `{"credsStore":"missing","credHelpers":{"reg.example:5000":"test"},"auths":{"reg.example:5000":{"auth":"` + basicAuth("a", "b") + `"}}}`,
			host: "reg.example:5000", user: "helperuser", pass: "helperpass"},
		{name: "helper without entry falls back to auths", config: `{"credsStore":"test","auths":{"plain.example":{"auth":"` + basicAuth("dave", "d") + `"}}}`,
			host: "plain.example", user: "dave", pass: "d"},
		{name: "failing helper is an error", config: `{"credHelpers":{"broken.example":"test"}}`,
			host: "broken.example", wantErr: "helper exploded"},
		{name: "missing helper binary is an error", config: `{"credsStore":"nonexistent-xyz"}`,
			host: "reg.example:5000", wantErr: "docker-credential-nonexistent-xyz"},
		{name: "malformed config", config: `{"auths":`, host: "reg.example", wantErr: "docker config"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			d := dockerCredentials{path: filepath.Join(t.TempDir(), "absent.json")}
			if tc.config != "" {
				d.path = writeDockerConfig(t, tc.config)
			}
			user, pass, err := d.credentials(tc.host)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want containing %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if user != tc.user || pass != tc.pass {
				t.Fatalf("got (%q, %q), want (%q, %q)", user, pass, tc.user, tc.pass)
			}
		})
	}
}
