package logging

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"strings"
	"testing"

	"github.com/containerd/log"
)

// TestContainerdLog: containerd's log.G entries come out of lazysnap's slog
// handler, one record each, with their fields as attributes and their
// level mapped, and below the handler's level not at all.
func TestContainerdLog(t *testing.T) {
	var buf bytes.Buffer
	ctx := log.WithLogger(context.Background(), Containerd(NewHandler(&buf)))
	log.G(ctx).WithField("k", "v").Info("m")
	log.G(ctx).WithError(errors.New("boom")).WithField("snapshot", "s 1").Warn("lazysnap: gone")
	log.G(ctx).WithField("path", "/x").Debug("not at info")
	log.G(ctx).WithField("path", "/tmp").Warn(fsverityWarning) // at debug
	lines := strings.Split(strings.TrimSuffix(buf.String(), "\n"), "\n")
	if len(lines) != 2 {
		t.Fatalf("%d lines, want 2:\n%s", len(lines), buf.String())
	}
	for i, want := range []string{"level=INFO msg=m k=v", `level=WARN msg="lazysnap: gone" error=boom snapshot="s 1"`} {
		if !strings.HasPrefix(lines[i], "time=") || !strings.HasSuffix(lines[i], want) {
			t.Errorf("line %d: %q, want time=... %s", i, lines[i], want)
		}
	}

	// a handler at debug gets the debug entries; log.L, which log.G falls
	// back to without a logger in the context, is routed the same way
	buf.Reset()
	old := log.L
	defer func() { log.L = old }()
	log.L = Containerd(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug}))
	log.G(context.Background()).WithField("path", "/x").Debug("detaching")
	if got := buf.String(); !strings.Contains(got, "level=DEBUG msg=detaching path=/x") {
		t.Fatalf("log.L debug entry: %q", got)
	}
}

// TestConfig: New makes a handler of the configured format and level, and
// containerd's log.G entries routed through Containerd obey both: in json
// every line is one object; below the level nothing comes out, lazysnap's
// records and containerd's alike. An unknown level or format is ErrConfig.
func TestConfig(t *testing.T) {
	cases := []struct {
		name string
		cfg  Config
		want []string // the messages written, in order
	}{
		{"defaults: text at info", Config{}, []string{"own info", "own warn", "cd info", "cd warn"}},
		{"json at info", Config{Format: "json"}, []string{"own info", "own warn", "cd info", "cd warn"}},
		{"json at debug", Config{Level: "debug", Format: "JSON"}, []string{"own debug", "own info", "own warn", "cd debug", "cd info", "cd warn"}},
		{"text at warn", Config{Level: "warn", Format: "text"}, []string{"own warn", "cd warn"}},
		{"json at error", Config{Level: "error", Format: "json"}, nil},
		{"json at trace", Config{Level: "trace", Format: "json"}, []string{"own debug", "own info", "own warn", "cd trace", "cd debug", "cd info", "cd warn"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var buf bytes.Buffer
			h, err := New(&buf, c.cfg)
			if err != nil {
				t.Fatal(err)
			}
			own := slog.New(h)
			own.Debug("own debug", "k", 1)
			own.Info("own info", "k", 2)
			own.Warn("own warn", "k", 3)
			ctx := log.WithLogger(context.Background(), Containerd(h))
			log.G(ctx).WithField("k", 4).Trace("cd trace")
			log.G(ctx).WithField("k", 5).Debug("cd debug")
			log.G(ctx).WithField("k", 6).Info("cd info")
			log.G(ctx).WithField("k", 7).Warn("cd warn")

			var got []string
			for _, line := range strings.Split(strings.TrimSuffix(buf.String(), "\n"), "\n") {
				if line == "" {
					continue
				}
				if strings.EqualFold(c.cfg.Format, "json") {
					var rec map[string]any
					if err := json.Unmarshal([]byte(line), &rec); err != nil {
						t.Fatalf("not JSON: %q: %v", line, err)
					}
					if rec["time"] == nil || rec["level"] == nil || rec["k"] == nil {
						t.Fatalf("record without time, level or its attribute: %q", line)
					}
					got = append(got, rec["msg"].(string))
					continue
				}
				if !strings.HasPrefix(line, "time=") || !strings.Contains(line, " k=") {
					t.Fatalf("not a text record: %q", line)
				}
				_, msg, _ := strings.Cut(line, `msg="`)
				msg, _, _ = strings.Cut(msg, `"`)
				got = append(got, msg)
			}
			if strings.Join(got, "|") != strings.Join(c.want, "|") {
				t.Fatalf("logged %q, want %q", got, c.want)
			}
		})
	}
	for _, bad := range []Config{{Level: "verbose"}, {Format: "logfmt"}} {
		if _, err := New(io.Discard, bad); !errors.Is(err, ErrConfig) {
			t.Errorf("%+v: %v, want ErrConfig", bad, err)
		}
	}
}
