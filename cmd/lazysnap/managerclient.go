package main

import (
	"cmp"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"

	"github.com/lazysnap/lazysnap/internal/logging"
)

// managerStarter returns the function that starts `lazysnap fuse-manager`
// for serve: this executable, with serve's configuration file and root, in
// a session of its own (so that it outlives serve and its terminal), its
// output appended to fusemanager.log in the root directory, which the
// manager rotates.
func managerStarter(cfgPath, root string, lc logging.Config) func() (<-chan error, error) {
	return func() (<-chan error, error) {
		exe, err := os.Executable()
		if err != nil {
			return nil, err
		}
		// it runs in /: make the paths absolute
		if root, err = filepath.Abs(root); err != nil {
			return nil, err
		}
		logPath := filepath.Join(root, managerLogName)
		args := []string{"fuse-manager", "--root", root, "--log-file", logPath, "--log-level", cmp.Or(lc.Level, "info"), "--log-format", cmp.Or(lc.Format, "text")}
		if cfgPath != "" {
			p, err := filepath.Abs(cfgPath)
			if err != nil {
				return nil, err
			}
			args = append(args, "--config", p)
		}
		if err := os.MkdirAll(root, 0o700); err != nil {
			return nil, err
		}
		// until the manager has opened --log-file itself (a bad flag, say)
		logf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
		if err != nil {
			return nil, err
		}
		defer logf.Close()
		cmd := exec.Command(exe, args...)
		cmd.Stdout, cmd.Stderr = logf, logf
		// systemd's notify socket is serve's, not the manager's
		cmd.Env = slices.DeleteFunc(os.Environ(), func(kv string) bool { return strings.HasPrefix(kv, "NOTIFY_SOCKET=") })
		cmd.Dir = "/"
		cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
		if err := cmd.Start(); err != nil {
			return nil, fmt.Errorf("start fuse manager: %w", err)
		}
		exited := make(chan error, 1)
		go func() { exited <- fmt.Errorf("%w (its output: %s)", cmd.Wait(), logPath) }() // and reap it should it exit while serve runs
		return exited, nil
	}
}
