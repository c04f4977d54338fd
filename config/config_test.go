package config

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"strings"
	"testing"

	"github.com/lazysnap/lazysnap/internal/logging"
)

// TestCRIListenAddress: the CRI image service's address, from
// listen_address or (warned) its old name; one that is containerd's CRI
// socket, where the calls go, is refused.
func TestCRIListenAddress(t *testing.T) {
	for _, tc := range []struct {
		name, toml, addr, warn, err string
	}{
		{"off", "", "", "", ""},
		{"listen_address", "[cri]\n  listen_address = \"/run/lazysnap/cri.sock\"\n", "/run/lazysnap/cri.sock", "", ""},
		{"unix URL", "[cri]\n  listen_address = \"unix:///run/lazysnap/cri.sock\"\n", "/run/lazysnap/cri.sock", "", ""},
		{"old name warns", "[cri]\n  image_service_address = \"/run/lazysnap/cri.sock\"\n", "/run/lazysnap/cri.sock", "old name of listen_address", ""},
		{"both names alike", "[cri]\n  listen_address = \"/run/l.sock\"\n  image_service_address = \"/run/l.sock\"\n", "/run/l.sock", "old name", ""},
		{"both names differ", "[cri]\n  listen_address = \"/run/a.sock\"\n  image_service_address = \"/run/b.sock\"\n", "", "", "differ"},
		{"containerd's socket", "[cri]\n  listen_address = \"/run/containerd/containerd.sock\"\n", "", "", "is containerd_cri_address"},
		{"containerd's socket as a nydus value", "[cri]\n  image_service_address = \"unix:///run/containerd/containerd.sock\"\n", "", "", "is containerd_cri_address"},
		{"containerd's socket configured", "[cri]\n  listen_address = \"/run/k/c.sock\"\n  containerd_cri_address = \"/run/k/../k/c.sock\"\n", "", "", "is containerd_cri_address"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := filepath.Join(t.TempDir(), "lazysnap.toml")
			if err := os.WriteFile(p, []byte(tc.toml), 0o644); err != nil {
				t.Fatal(err)
			}
			c, err := Load(p)
			if err != nil {
				t.Fatal(err)
			}
			addr, warn, err := c.CRIListenAddress()
			if tc.err != "" {
				if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("error %v, want ErrInvalid saying %q", err, tc.err)
				}
				return
			}
			if err != nil || addr != tc.addr || (tc.warn == "") != (warn == "") || !strings.Contains(warn, tc.warn) {
				t.Fatalf("got %q, warning %q, %v; want %q, warning %q", addr, warn, err, tc.addr, tc.warn)
			}
		})
	}
}

// TestLoad: keys that are not set keep their defaults, and a
// key lazysnap does not know (a typo) or a value of the wrong type fails
// with the file's name and the key, instead of being ignored.
func TestLoad(t *testing.T) {
	for _, tc := range []struct {
		name, toml string
		check      func(c Config) bool
		err        string
	}{
		{"empty", "", func(c Config) bool {
			return c.Root == "/var/lib/lazysnap" && c.FuseManager.Enable && c.Registry.HostsDir == "/etc/containerd/certs.d"
		}, ""},
		{"partial table keeps the rest", "[fuse_manager]\n  address = \"/run/fm.sock\"\n", func(c Config) bool {
			return c.FuseManager.Enable && c.FuseManager.Address == "/run/fm.sock"
		}, ""},
		{"settings", "root = \"/x\"\n[fetch]\n  no_prefetch = true\n  timeout = \"30s\"\n[cache]\n  max_bytes = 1024\n", func(c Config) bool {
			return c.Root == "/x" && c.Fetch.NoPrefetch && c.Cache.MaxBytes == 1024 && c.Fetch.Timeout.D().Seconds() == 30
		}, ""},
		{"stall timeout", "[fetch]\n  stall_timeout = \"2s\"\n", func(c Config) bool {
			return c.Fetch.StallTimeout.D().Seconds() == 2
		}, ""},
		{"request timeout", "[fetch]\n  request_timeout = \"5s\"\n", func(c Config) bool {
			return c.Fetch.RequestTimeout.D().Seconds() == 5
		}, ""},
		{"index caps", "[index]\n  max_entries = 1000\n  max_memory_bytes = 1048576\n", func(c Config) bool {
			return c.Index.MaxEntries == 1000 && c.Index.MaxMemoryBytes == 1<<20
		}, ""},
		{"kubernetes", "[registry]\n  credential_provider_config = \"/etc/kubernetes/cp.yaml\"\n  credential_provider_bin_dir = \"/usr/libexec/kubernetes/cp\"\n[cri]\n  listen_address = \"/run/lazysnap/cri.sock\"\n", func(c Config) bool {
			return c.Registry.CredentialProviderConfig == "/etc/kubernetes/cp.yaml" && c.Registry.CredentialProviderBinDir == "/usr/libexec/kubernetes/cp" &&
				c.CRI.ListenAddress == "/run/lazysnap/cri.sock" && c.CRI.ContainerdCRIAddress == "/run/containerd/containerd.sock"
		}, ""},
		{"misspelt key", "[fetch]\n  no_prefetc = true\n", nil, "unknown key fetch.no_prefetc (line 2)"},
		{"unknown table", "[registries]\n  hosts_dir = \"/x\"\n", nil, "registries"},
		{"wrong type", "[cache]\n  max_bytes = \"10G\"\n", nil, "cache.max_bytes"},
		{"not a duration", "[fetch]\n  timeout = \"2 minutes\"\n", nil, "fetch.timeout"},
		{"blob verification by default", "", func(c Config) bool { return c.Fetch.VerifyBlob }, ""},
		{"blob verification off", "[fetch]\n  verify_blob = false\n", func(c Config) bool { return !c.Fetch.VerifyBlob }, ""},
		{"SOCI v1 indexes off by default", "", func(c Config) bool { return !c.Soci.AllowV1Indexes }, ""},
		{"SOCI v1 indexes allowed", "[soci]\n  allow_v1_indexes = true\n", func(c Config) bool { return c.Soci.AllowV1Indexes }, ""},
		{"SOCI publishing off and nothing trusted by default", "", func(c Config) bool {
			return c.Soci.PublishRepository == "" && len(c.Soci.TrustedRepositories) == 0
		}, ""},
		{"SOCI publishing and trusted repositories", "[soci]\n  publish_repository = \"r.example/idx\"\n  trusted_repositories = [\"r.example/idx\", \"r.example/b\"]\n", func(c Config) bool {
			return c.Soci.PublishRepository == "r.example/idx" && len(c.Soci.TrustedRepositories) == 2 && !c.Soci.AllowV1Indexes
		}, ""},
		{"line-rate pulls by default", "", func(c Config) bool { return c.Pull.LineRate && c.Pull.Index }, ""},
		{"line-rate pulls off", "[pull]\n  line_rate = false\n  connections = 1\n", func(c Config) bool {
			return !c.Pull.LineRate && c.Pull.Connections == 1 && !c.Pull.ContentStore && c.Pull.ContainerdAddress == "/run/containerd/containerd.sock"
		}, ""},
		{"profiles by default", "", func(c Config) bool { return c.Profile.Record && c.Profile.Fetch && !c.Profile.Publish }, ""},
		{"fetch policy", "[fetch]\n  background_quiet = \"1s\"\n  read_around_bytes = 0\n[profile]\n  publish = true\n  quiet = \"3s\"\n", func(c Config) bool {
			return c.Fetch.BackgroundQuiet.D().Seconds() == 1 && c.Profile.Publish && c.Profile.Quiet.D().Seconds() == 3
		}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := filepath.Join(t.TempDir(), "lazysnap.toml")
			if err := os.WriteFile(p, []byte(tc.toml), 0o644); err != nil {
				t.Fatal(err)
			}
			c, err := Load(p)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) || !strings.Contains(err.Error(), p) {
					t.Fatalf("error %v, want one naming %q and the file", err, tc.err)
				}
				return
			}
			if err != nil || !tc.check(c) {
				t.Fatalf("config %+v, %v", c, err)
			}
		})
	}
}

// TestExampleConfig: dist/config.toml, installed as the configuration,
// loads as the defaults; with every key it shows uncommented it still
// loads (each is a key serve knows, its value of the right type); and it
// shows every key serve knows.
func TestExampleConfig(t *testing.T) {
	example, err := os.ReadFile("../dist/config.toml")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	load := func(name, text string) Config {
		t.Helper()
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
		c, err := Load(p)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		return c
	}
	if c := load("as-is.toml", string(example)); !reflect.DeepEqual(c, Default()) {
		t.Errorf("the example as installed is not the defaults: %+v", c)
	}
	key := regexp.MustCompile(`(?m)^# ([a-z0-9_]+ = .*)$`)
	load("uncommented.toml", key.ReplaceAllString(string(example), "$1"))

	shown := map[string]bool{}
	table := ""
	for _, line := range strings.Split(key.ReplaceAllString(string(example), "$1"), "\n") {
		if strings.HasPrefix(line, "[") {
			table = strings.Trim(line, "[]") + "."
		} else if k, _, ok := strings.Cut(line, " = "); ok && !strings.HasPrefix(k, "#") {
			shown[table+k] = true
		}
	}
	var walk func(prefix string, typ reflect.Type)
	walk = func(prefix string, typ reflect.Type) {
		for i := range typ.NumField() {
			f := typ.Field(i)
			if !f.IsExported() || f.Tag.Get("deprecated") != "" {
				continue // an old name
			}
			name := prefix + f.Tag.Get("toml")
			if f.Type.Kind() == reflect.Struct && (f.Type.Name() == "" || f.Type == reflect.TypeOf(logging.Config{})) {
				walk(name+".", f.Type)
			} else if !shown[name] {
				t.Errorf("dist/config.toml does not show %s", name)
			}
		}
	}
	walk("", reflect.TypeOf(Config{}))
}
