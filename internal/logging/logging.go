// Package logging gives a lazysnap daemon one log stream: an slog
// handler (NewHandler, or New for a configured level and format: the
// [log] section, Config) for lazysnap's own records, and containerd's
// log.G entries (logrus underneath; snapshotter/ logs that way, as
// containerd's snapshotters do) turned into records of the same handler
// (Containerd), so that they obey the same level and format. A Config
// that names an unknown level or format is ErrConfig. It is safe for
// concurrent use, as slog handlers are.
package logging

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strings"

	"github.com/containerd/log"
	"github.com/sirupsen/logrus"
)

// ErrConfig is a log level or format that does not exist.
var ErrConfig = errors.New("logging: invalid configuration")

// Config is a daemon's [log] section (and its --log-level and
// --log-format flags). Zero values mean the defaults.
type Config struct {
	// Level is the lowest level logged: trace, debug, info (the
	// default), warn or error.
	Level string `toml:"level"`
	// Format is text (slog's key=value lines, the default) or json (one
	// object a line: time, level, msg, then the attributes).
	Format string `toml:"format"`
}

// Levels and Formats are the values Config takes.
const (
	Levels  = "trace, debug, info, warn, error"
	Formats = "text, json"
)

// New is NewHandler for c: its format, at its level. It fails with
// ErrConfig for a level or format it does not know.
func New(w io.Writer, c Config) (slog.Handler, error) {
	var level slog.Level
	switch strings.ToLower(c.Level) {
	case "trace":
		level = slogLevel(logrus.TraceLevel)
	case "debug":
		level = slog.LevelDebug
	case "", "info":
		level = slog.LevelInfo
	case "warn", "warning":
		level = slog.LevelWarn
	case "error":
		level = slog.LevelError
	default:
		return nil, fmt.Errorf("%w: log level %q (want one of %s)", ErrConfig, c.Level, Levels)
	}
	opts := &slog.HandlerOptions{Level: level}
	switch strings.ToLower(c.Format) {
	case "", "text":
		return slog.NewTextHandler(w, opts), nil
	case "json":
		return slog.NewJSONHandler(w, opts), nil
	}
	return nil, fmt.Errorf("%w: log format %q (want one of %s)", ErrConfig, c.Format, Formats)
}

// NewHandler is the daemon's one log handler: lazysnap's own slog
// records and, through Containerd, containerd's log.G entries (and
// snapshotter/'s, which logs the containerd way) are written by handlers
// made here, in one format, at one level.
func NewHandler(w io.Writer) slog.Handler {
	return slog.NewTextHandler(w, nil)
}

// Containerd returns a containerd/log entry (logrus underneath)
// whose every entry becomes one record of h: the message, the entry's
// fields as attributes, its level mapped to slog's. h decides what is
// logged; logrus only skips building entries below h's lowest level.
// A daemon makes it log.L, which log.G falls back to.
func Containerd(h slog.Handler) *log.Entry {
	lg := logrus.New()
	lg.Out = io.Discard
	lg.Formatter = slogFormatter{h}
	lg.Level = logrus.PanicLevel
	for _, l := range []logrus.Level{logrus.TraceLevel, logrus.DebugLevel, logrus.InfoLevel, logrus.WarnLevel, logrus.ErrorLevel, logrus.FatalLevel} {
		if h.Enabled(context.Background(), slogLevel(l)) {
			lg.Level = l
			break
		}
	}
	return logrus.NewEntry(lg)
}

// slogFormatter hands each logrus entry to an slog.Handler and gives
// logrus nothing to write.
type slogFormatter struct{ h slog.Handler }

func (f slogFormatter) Format(e *logrus.Entry) ([]byte, error) {
	ctx := e.Context
	if ctx == nil {
		ctx = context.Background()
	}
	level := slogLevel(e.Level)
	if e.Message == fsverityWarning {
		level = slog.LevelDebug
	}
	if !f.h.Enabled(ctx, level) {
		return nil, nil
	}
	r := slog.NewRecord(e.Time, level, e.Message, 0)
	keys := make([]string, 0, len(e.Data))
	for k := range e.Data {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		r.AddAttrs(slog.Any(k, e.Data[k]))
	}
	return nil, f.h.Handle(ctx, r)
}

// fsverityWarning is what containerd 2's local content store logs, as a
// warning through log.L, each time one is opened on a filesystem without
// fs-verity (tmpfs, most ext4). containerd opens one at start; lazysnap
// convert opens one per pulled image, so it is shown at debug.
const fsverityWarning = "failed check for fsverity support"

func slogLevel(l logrus.Level) slog.Level {
	switch l {
	case logrus.TraceLevel:
		return slog.LevelDebug - 4
	case logrus.DebugLevel:
		return slog.LevelDebug
	case logrus.InfoLevel:
		return slog.LevelInfo
	case logrus.WarnLevel:
		return slog.LevelWarn
	case logrus.ErrorLevel:
		return slog.LevelError
	case logrus.FatalLevel:
		return slog.LevelError + 4
	default: // panic
		return slog.LevelError + 8
	}
}
