// Package asuser runs one test function of the running test binary as
// another user, for tests of peer-credential checks: the binary is copied
// where that user may run it, into a directory (mode 0755) that the test
// may also use for the sockets under test.
package asuser

import (
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
)

// Dir returns a directory every user may enter (removed at cleanup),
// holding a copy of the test binary; it skips the test unless run as root.
func Dir(t *testing.T) string {
	t.Helper()
	if os.Getuid() != 0 {
		t.Skip("needs root: a client runs as another user")
	}
	dir, err := os.MkdirTemp("", "asuser-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(self)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "test.bin"), b, 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

// Command runs the test function named test of the binary in dir (Dir)
// as uid (and gid) uid, with env added.
func Command(dir, test string, uid uint32, env ...string) *exec.Cmd {
	cmd := exec.Command(filepath.Join(dir, "test.bin"), "-test.run=^"+test+"$")
	cmd.Env = append(os.Environ(), env...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uid, Gid: uid}}
	return cmd
}
