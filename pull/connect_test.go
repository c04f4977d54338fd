package pull

import (
	"context"
	"errors"
	"net"
	"path/filepath"
	"strings"
	"testing"
)

// TestConnectWithoutContainerd: no socket, or a socket nothing listens
// on, fails at once with ErrNoContainerd and says which (a running
// containerd is the e2e tests').
func TestConnectWithoutContainerd(t *testing.T) {
	dir := t.TempDir()
	dead := filepath.Join(dir, "dead.sock")
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: dead, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	l.SetUnlinkOnClose(false)
	l.Close()
	for _, tc := range []struct{ name, address, want string }{
		{"no socket", filepath.Join(dir, "none.sock"), "none.sock does not exist: is containerd running?"},
		{"nothing listens", dead, "nothing listens on containerd socket " + dead},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := Connect(context.Background(), tc.address, DefaultNamespace)
			if c != nil || !errors.Is(err, ErrNoContainerd) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Connect: %v, want ErrNoContainerd saying %q", err, tc.want)
			}
		})
	}
}
