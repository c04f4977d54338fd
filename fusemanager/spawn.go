package fusemanager

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"slices"
	"strings"
	"syscall"
	"time"
)

// Spawn starts this executable with args in a session of its own (so that
// it outlives the caller and its terminal), in /, its output appended to
// logPath, without the caller's NOTIFY_SOCKET (systemd's notify socket is
// the caller's, not the child's). exited receives its exit (the caller
// reaps it should it exit first).
func Spawn(args []string, logPath string) (exited <-chan error, err error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, err
	}
	logf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, err
	}
	defer logf.Close()
	cmd := exec.Command(exe, args...)
	cmd.Stdout, cmd.Stderr, cmd.Dir = logf, logf, "/"
	cmd.Env = slices.DeleteFunc(os.Environ(), func(kv string) bool { return strings.HasPrefix(kv, "NOTIFY_SOCKET=") })
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("fusemanager: start %s: %w", args[0], err)
	}
	c := make(chan error, 1)
	go func() { c <- fmt.Errorf("%w (its output: %s)", cmd.Wait(), logPath) }()
	return c, nil
}

// StartKeeper returns the client of the keeper on sock, starting one
// (`<this executable> fd-keeper --socket sock`, output to logPath) unless
// one answers, and waiting up to 10 s for it to answer.
func StartKeeper(ctx context.Context, sock, logPath string) (*KeeperClient, error) {
	c := NewKeeperClient(sock)
	if err := c.Drop(ctx, ""); err == nil {
		return c, nil
	}
	exited, err := Spawn([]string{"fd-keeper", "--socket", sock}, logPath)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	for {
		err := c.Drop(ctx, "")
		if err == nil {
			return c, nil
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("fusemanager: fd keeper did not answer: %w", err)
		case xerr := <-exited:
			return nil, fmt.Errorf("fusemanager: fd keeper exited at start: %w", xerr)
		case <-time.After(20 * time.Millisecond):
		}
	}
}
