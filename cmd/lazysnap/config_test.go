package main

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/containerd/log"
	"github.com/lazysnap/lazysnap/config"
)

// TestConfigPath: --config left at its default reads /etc/lazysnap/config.toml
// only if it exists; a file named by --config must exist.
func TestConfigPath(t *testing.T) {
	if _, err := os.Stat(config.DefaultPath); err == nil {
		t.Skipf("%s exists here", config.DefaultPath)
	}
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"default, absent", nil, ""},
		{"default named", []string{"--config", config.DefaultPath}, config.DefaultPath},
		{"another", []string{"--config", "/x.toml"}, "/x.toml"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fs := flag.NewFlagSet("t", flag.ContinueOnError)
			p := configFlag(fs, "config")
			if err := fs.Parse(tc.args); err != nil {
				t.Fatal(err)
			}
			if got := configPath(fs, *p); got != tc.want {
				t.Fatalf("configPath = %q, want %q", got, tc.want)
			}
		})
	}
}

// TestDaemonLog: the daemons' [log] level and format, and --log-level and
// --log-format over them, apply to lazysnap's records and to containerd's
// (log.G, which falls back to log.L: snapshotter/ logs that way); an
// unknown level or format is refused.
func TestDaemonLog(t *testing.T) {
	old := log.L
	t.Cleanup(func() { log.L = old })
	for _, tc := range []struct {
		name, toml string
		flags      []string
		json       bool
		want       []string // messages logged
		err        string
	}{
		{"defaults", "", nil, false, []string{"own info", "containerd info"}, ""},
		{"config json debug", "[log]\n  level = \"debug\"\n  format = \"json\"\n", nil, true, []string{"own debug", "own info", "containerd debug", "containerd info"}, ""},
		{"flags over config", "[log]\n  level = \"error\"\n  format = \"json\"\n", []string{"--log-level", "info", "--log-format", "text"}, false, []string{"own info", "containerd info"}, ""},
		{"config warn", "[log]\n  level = \"warn\"\n", nil, false, nil, ""},
		{"bad level", "[log]\n  level = \"loud\"\n", nil, false, nil, `log level "loud"`},
		{"bad format flag", "", []string{"--log-format", "xml"}, false, nil, `log format "xml"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := filepath.Join(t.TempDir(), "lazysnap.toml")
			if err := os.WriteFile(p, []byte(tc.toml), 0o644); err != nil {
				t.Fatal(err)
			}
			var stderr bytes.Buffer
			ctx, cfg, _, err := parseDaemonFlags(context.Background(), flag.NewFlagSet("serve", flag.ContinueOnError), append([]string{"--config", p}, tc.flags...), &stderr)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("error %v, want %q", err, tc.err)
				}
				return
			}
			if err != nil || cfg == nil {
				t.Fatal(err)
			}
			logger(ctx).Debug("own debug")
			logger(ctx).Info("own info")
			log.G(context.Background()).WithField("k", "v").Debug("containerd debug")
			log.G(context.Background()).WithField("k", "v").Info("containerd info")
			var got []string
			for _, line := range strings.Split(strings.TrimSpace(stderr.String()), "\n") {
				if line == "" {
					continue
				}
				var rec struct{ Msg string }
				if jerr := json.Unmarshal([]byte(line), &rec); (jerr == nil) != tc.json {
					t.Fatalf("json %v, line %q", tc.json, line)
				}
				if !tc.json {
					_, rec.Msg, _ = strings.Cut(line, `msg="`)
					rec.Msg, _, _ = strings.Cut(rec.Msg, `"`)
				}
				got = append(got, rec.Msg)
			}
			if strings.Join(got, "|") != strings.Join(tc.want, "|") {
				t.Fatalf("logged %q, want %q", got, tc.want)
			}
		})
	}
}
