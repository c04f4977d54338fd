package main

import (
	"cmp"
	"os"
	"path/filepath"

	"github.com/lazysnap/lazysnap/fusemanager"
	"github.com/lazysnap/lazysnap/internal/logging"
)

// managerStarter returns the function that starts `lazysnap fuse-manager`
// for serve: this executable, with serve's configuration file and root, in
// a session of its own (so that it outlives serve and its terminal), its
// output appended to fusemanager.log in the root directory, which the
// manager rotates.
func managerStarter(cfgPath, root string, lc logging.Config) func() (<-chan error, error) {
	return func() (<-chan error, error) {
		// it runs in /: make the paths absolute
		root, err := filepath.Abs(root)
		if err != nil {
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
		// logPath is its output until it opens --log-file itself (a bad flag, say)
		return fusemanager.Spawn(args, logPath)
	}
}
