package main

import (
	"context"
	"time"

	"github.com/lazysnap/lazysnap/internal/logfile"
)

// The fuse manager outlives serve and is not under a supervisor's log
// collection when serve starts it, so it rotates its own log file
// (internal/logfile): at 16 MiB, keeping 3 old files, 64 MiB in all.
const (
	managerLogMaxBytes = 16 << 20
	managerLogKeep     = 3
	// managerLogCheck is how often the size is checked: a log writing
	// faster than 16 MiB per 10 s is an incident anyway.
	managerLogCheck = 10 * time.Second
)

// logFile is logfile.File under the names fusemanager.go uses; it goes
// once fusemanager.go (being moved separately, issue 12) uses
// logfile.File itself.
type logFile struct {
	path string
	max  int64
	keep int
	fds  []int
}

func (l *logFile) file() *logfile.File {
	return &logfile.File{Path: l.path, MaxBytes: l.max, Keep: l.keep, FDs: l.fds}
}

func (l *logFile) open() error           { return l.file().Open() }
func (l *logFile) rotate() (bool, error) { return l.file().Rotate() }
func (l *logFile) run(ctx context.Context, interval time.Duration, onErr func(error)) {
	l.file().Run(ctx, interval, onErr)
}
