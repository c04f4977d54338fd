package logfile

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strconv"
	"syscall"
	"time"
)

// File is a log file made the output of some descriptors, rotated by size.
type File struct {
	Path     string
	MaxBytes int64 // Rotate rotates once the file is larger
	Keep     int   // rotated generations kept (PATH.1 … PATH.<Keep>); 0 keeps none
	FDs      []int // the descriptors that point at the current file
}

// Open opens (creates, appends to) Path and makes each of FDs refer to it.
func (l *File) Open() error {
	f, err := os.OpenFile(l.Path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	defer f.Close()
	for _, fd := range l.FDs {
		if err := syscall.Dup3(int(f.Fd()), fd, 0); err != nil {
			return fmt.Errorf("log file %s: dup onto fd %d: %w", l.Path, fd, err)
		}
	}
	return nil
}

// Rotate rotates when the file has grown past MaxBytes, or reopens it when
// an operator has removed it. It reports whether the file was replaced.
func (l *File) Rotate() (bool, error) {
	fi, err := os.Stat(l.Path)
	switch {
	case errors.Is(err, os.ErrNotExist):
		return true, l.Open()
	case err != nil:
		return false, err
	case fi.Size() <= l.MaxBytes:
		return false, nil
	}
	for i := l.Keep - 1; i >= 1; i-- {
		if err := os.Rename(l.Generation(i), l.Generation(i+1)); err != nil && !errors.Is(err, os.ErrNotExist) {
			return false, err
		}
	}
	if l.Keep < 1 {
		if err := os.Remove(l.Path); err != nil {
			return false, err
		}
	} else if err := os.Rename(l.Path, l.Generation(1)); err != nil {
		return false, err
	}
	return true, l.Open()
}

// Generation is the path of the i-th rotated file, PATH.i (1 the newest).
func (l *File) Generation(i int) string { return l.Path + "." + strconv.Itoa(i) }

// Run calls Rotate every interval until ctx is done; failures go to onErr
// (which may itself write to the log).
func (l *File) Run(ctx context.Context, interval time.Duration, onErr func(error)) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if _, err := l.Rotate(); err != nil {
				onErr(err)
			}
		}
	}
}
