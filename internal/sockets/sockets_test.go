package sockets_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/lazysnap/lazysnap/internal/sockets"
	"github.com/lazysnap/lazysnap/internal/testenv/asuser"
)

// TestListenMode: the socket has its final mode as soon as it exists,
// whatever the umask (here 000, under which a bind makes it 0777).
func TestListenMode(t *testing.T) {
	old := syscall.Umask(0)
	defer syscall.Umask(old)
	for _, tc := range []struct {
		name    string
		network string
		mode    os.FileMode
	}{
		{"stream 0600", "unix", 0o600},
		{"stream 0660", "unix", 0o660},
		{"seqpacket 0600", "unixpacket", 0o600},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := filepath.Join(t.TempDir(), "sub", "x.sock")
			l, err := sockets.Listen(context.Background(), tc.network, p, tc.mode, 0o700)
			if err != nil {
				t.Fatal(err)
			}
			defer l.Close()
			fi, err := os.Lstat(p)
			if err != nil {
				t.Fatal(err)
			}
			if fi.Mode().Type() != os.ModeSocket || fi.Mode().Perm() != tc.mode {
				t.Fatalf("socket mode %v, want socket %v", fi.Mode(), tc.mode)
			}
			if di, _ := os.Stat(filepath.Dir(p)); di.Mode().Perm() != 0o700 {
				t.Fatalf("directory mode %v, want 0700", di.Mode().Perm())
			}
			if ents, _ := os.ReadDir(filepath.Dir(p)); len(ents) != 1 {
				t.Fatalf("directory holds %d entries, want only the socket", len(ents))
			}
			c, err := net.Dial(tc.network, p)
			if err != nil {
				t.Fatalf("dial: %v", err)
			}
			c.Close()
		})
	}
}

// TestListenRefusesLive: a path where something answers (another
// listener, even of another socket type) is refused and left alone; a
// stale socket is replaced; a file that is not a socket is refused.
func TestListenRefusesLive(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	live := filepath.Join(dir, "live.sock")
	ll, err := net.Listen("unix", live)
	if err != nil {
		t.Fatal(err)
	}
	defer ll.Close()
	packet := filepath.Join(dir, "packet.sock")
	pl, err := net.Listen("unixpacket", packet)
	if err != nil {
		t.Fatal(err)
	}
	defer pl.Close()
	stale := filepath.Join(dir, "stale.sock")
	sl, err := net.ListenUnix("unix", &net.UnixAddr{Name: stale, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	sl.SetUnlinkOnClose(false)
	sl.Close()
	file := filepath.Join(dir, "file")
	os.WriteFile(file, []byte("x"), 0o644)
	for _, tc := range []struct {
		name, network, path string
		want                error
	}{
		{"live stream socket", "unix", live, sockets.ErrInUse},
		{"live seqpacket socket dialled as stream", "unix", packet, sockets.ErrInUse},
		{"regular file", "unix", file, sockets.ErrNotSocket},
		{"stale socket", "unix", stale, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l, err := sockets.Listen(ctx, tc.network, tc.path, 0o600, 0o700)
			if !errors.Is(err, tc.want) {
				t.Fatalf("Listen: %v, want %v", err, tc.want)
			}
			if l != nil {
				l.Close()
			}
		})
	}
	// the live ones still answer
	for _, p := range []struct{ network, path string }{{"unix", live}, {"unixpacket", packet}} {
		c, err := net.Dial(p.network, p.path)
		if err != nil {
			t.Fatalf("%s after the refused Listen: %v", p.path, err)
		}
		c.Close()
	}
	if b, err := os.ReadFile(file); err != nil || string(b) != "x" {
		t.Fatalf("the file after the refused Listen: %q %v", b, err)
	}
}

// TestCloseSparesSuccessor: Close removes the listener's socket, but not
// one that replaced it at the path.
func TestCloseSparesSuccessor(t *testing.T) {
	ctx := context.Background()
	p := filepath.Join(t.TempDir(), "s.sock")
	l, err := sockets.Listen(ctx, "unix", p, 0o600, 0o700)
	if err != nil {
		t.Fatal(err)
	}
	l.Close()
	if _, err := os.Lstat(p); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("socket after Close: %v", err)
	}
	l1, err := sockets.Listen(ctx, "unix", p, 0o600, 0o700)
	if err != nil {
		t.Fatal(err)
	}
	os.Remove(p) // an operator's cleanup; a successor takes the path
	l2, err := sockets.Listen(ctx, "unix", p, 0o600, 0o700)
	if err != nil {
		t.Fatal(err)
	}
	defer l2.Close()
	l1.Close()
	c, err := net.Dial("unix", p)
	if err != nil {
		t.Fatalf("the successor's socket after its predecessor closed: %v", err)
	}
	c.Close()
}

// TestPeerUID: the credentials of the process at the other end.
func TestPeerUID(t *testing.T) {
	p := filepath.Join(t.TempDir(), "s.sock")
	l, err := sockets.Listen(context.Background(), "unix", p, 0o600, 0o700)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go func() {
		c, err := net.Dial("unix", p)
		if err == nil {
			defer c.Close()
			c.Read(make([]byte, 1))
		}
	}()
	c, err := l.AcceptUnix()
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	uid, pid, err := sockets.PeerUID(c)
	if err != nil || uid != uint32(os.Getuid()) || pid != int32(os.Getpid()) {
		t.Fatalf("PeerUID: uid %d pid %d %v, want %d %d", uid, pid, err, os.Getuid(), os.Getpid())
	}
}

// TestRootOrOwner: with RootOrOwner, a process of another user that can
// reach the socket (here world-writable) is disconnected unserved; root
// is served.
func TestRootOrOwner(t *testing.T) {
	dir := asuser.Dir(t)
	p := filepath.Join(dir, "s.sock")
	l, err := sockets.Listen(context.Background(), "unix", p, 0o666, 0o755)
	if err != nil {
		t.Fatal(err)
	}
	l.RootOrOwner()
	defer l.Close()
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			c.Write([]byte("served\n"))
			c.Close()
		}
	}()
	for _, tc := range []struct {
		name string
		uid  uint32
		want string
	}{
		{"root", 0, "client read \"served\\n\""},
		{"uid 65534", 65534, "client read \"\""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out, _ := asuser.Command(dir, "TestRootOrOwnerClient", tc.uid, "LAZYSNAP_SOCKET_CLIENT="+p).CombinedOutput()
			if !strings.Contains(string(out), tc.want) {
				t.Fatalf("%s's client: %s, want %s", tc.name, out, tc.want)
			}
		})
	}
}

// TestRootOrOwnerClient is TestRootOrOwner's client (it does nothing in a
// test run).
func TestRootOrOwnerClient(t *testing.T) {
	p := os.Getenv("LAZYSNAP_SOCKET_CLIENT")
	if p == "" {
		t.Skip("the client process of TestRootOrOwner")
	}
	c, err := net.Dial("unix", p)
	if err != nil {
		fmt.Println("client dial:", err)
		return
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	b, _ := io.ReadAll(c)
	fmt.Printf("client read %q\n", b)
}
