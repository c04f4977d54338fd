package logging

import (
	"bytes"
	"context"
	"errors"
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
