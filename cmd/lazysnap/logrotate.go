package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strconv"
	"syscall"
	"time"
)

// The fuse manager outlives serve and is not under a supervisor's log
// collection when serve starts it, so it rotates its own log file: once
// the file exceeds managerLogMaxBytes it becomes PATH.1 (PATH.1 becomes
// PATH.2, and so on; PATH.<managerLogKeep> is removed) and a fresh PATH
// takes its place. At most (keep+1) × max bytes of logs, 64 MiB, exist.
const (
	managerLogMaxBytes = 16 << 20
	managerLogKeep     = 3
	// managerLogCheck is how often the size is checked: a log writing
	// faster than 16 MiB per 10 s is an incident anyway.
	managerLogCheck = 10 * time.Second
)

// logFile is a log file made a process's stdout and stderr (by dup3), so
// that the structured log and the Go runtime's own output (a fatal
// error's stacks) both land in it, and that keeps to a size by rotation.
type logFile struct {
	path string
	max  int64
	keep int
	fds  []int // the descriptors that point at the current file
}

// open opens (creates, appends to) path and makes each of fds refer to it.
func (l *logFile) open() error {
	f, err := os.OpenFile(l.path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	defer f.Close()
	for _, fd := range l.fds {
		if err := syscall.Dup3(int(f.Fd()), fd, 0); err != nil {
			return fmt.Errorf("log file %s: dup onto fd %d: %w", l.path, fd, err)
		}
	}
	return nil
}

// rotate rotates when the file has grown past max, or reopens it when an
// operator has removed it. It reports whether the file was replaced.
func (l *logFile) rotate() (bool, error) {
	fi, err := os.Stat(l.path)
	switch {
	case errors.Is(err, os.ErrNotExist):
		return true, l.open()
	case err != nil:
		return false, err
	case fi.Size() <= l.max:
		return false, nil
	}
	for i := l.keep - 1; i >= 1; i-- {
		if err := os.Rename(l.gen(i), l.gen(i+1)); err != nil && !errors.Is(err, os.ErrNotExist) {
			return false, err
		}
	}
	if l.keep < 1 {
		if err := os.Remove(l.path); err != nil {
			return false, err
		}
	} else if err := os.Rename(l.path, l.gen(1)); err != nil {
		return false, err
	}
	return true, l.open()
}

func (l *logFile) gen(i int) string { return l.path + "." + strconv.Itoa(i) }

// run checks the file every interval until ctx is done; failures go to
// onErr (which may itself write to the log).
func (l *logFile) run(ctx context.Context, interval time.Duration, onErr func(error)) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if _, err := l.rotate(); err != nil {
				onErr(err)
			}
		}
	}
}
