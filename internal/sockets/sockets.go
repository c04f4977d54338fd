package sockets

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

var (
	// ErrInUse: something answers on the socket path.
	ErrInUse = errors.New("sockets: something answers on this socket (another daemon?)")
	// ErrNotSocket: the path exists and is not a socket.
	ErrNotSocket = errors.New("sockets: the path exists and is not a socket")
)

// dialTimeout bounds the liveness check of an existing socket.
const dialTimeout = 2 * time.Second

// Listen listens on the unix socket path (network "unix" or "unixpacket")
// with mode, creating its directory (dirMode) if missing; see the package
// doc.
func Listen(ctx context.Context, network, path string, mode, dirMode os.FileMode) (*Listener, error) {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, dirMode); err != nil {
		return nil, err
	}
	if err := Claim(ctx, network, path); err != nil {
		return nil, err
	}
	priv, err := os.MkdirTemp(dir, ".sock-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(priv)
	tmp := filepath.Join(priv, "s")
	l, err := net.ListenUnix(network, &net.UnixAddr{Name: tmp, Net: network})
	if err != nil {
		return nil, err
	}
	l.SetUnlinkOnClose(false)
	if err := os.Chmod(tmp, mode); err != nil {
		l.Close()
		return nil, err
	}
	var st unix.Stat_t
	if err := unix.Lstat(tmp, &st); err != nil {
		l.Close()
		return nil, err
	}
	// never over a socket that appeared since Claim
	if err := unix.Renameat2(unix.AT_FDCWD, tmp, unix.AT_FDCWD, path, unix.RENAME_NOREPLACE); err != nil {
		l.Close()
		if errors.Is(err, unix.EEXIST) {
			return nil, fmt.Errorf("%w: %s (created meanwhile)", ErrInUse, path)
		}
		return nil, fmt.Errorf("sockets: rename into %s: %w", path, err)
	}
	return &Listener{UnixListener: l, path: path, dev: st.Dev, ino: st.Ino}, nil
}

// Claim checks that path may be listened on: nothing there, or a stale
// socket, which it removes. Something answering there is ErrInUse.
func Claim(ctx context.Context, network, path string) error {
	fi, err := os.Lstat(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	if fi.Mode().Type() != os.ModeSocket {
		return fmt.Errorf("%w: %s (%s)", ErrNotSocket, path, fi.Mode().Type())
	}
	dctx, cancel := context.WithTimeout(ctx, dialTimeout)
	defer cancel()
	var d net.Dialer
	c, err := d.DialContext(dctx, network, path)
	if err == nil {
		c.Close()
		return fmt.Errorf("%w: %s", ErrInUse, path)
	}
	if !errors.Is(err, syscall.ECONNREFUSED) {
		// a listener of another type (EPROTOTYPE), one that does not
		// accept in time: someone is there
		return fmt.Errorf("%w: %s: %v", ErrInUse, path, err)
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	return nil
}

// Listener is a socket Listen created. Close removes its socket, unless
// another has replaced it at the path by then (a successor listens there).
type Listener struct {
	*net.UnixListener
	path        string
	dev, ino    uint64
	rootOrOwner bool
}

func (l *Listener) Close() error {
	err := l.UnixListener.Close()
	var st unix.Stat_t
	if unix.Lstat(l.path, &st) == nil && st.Dev == l.dev && st.Ino == l.ino {
		os.Remove(l.path)
	}
	return err
}

// Path is the socket's path.
func (l *Listener) Path() string { return l.path }

// RootOrOwner makes Accept close the connections of processes that are
// neither root's nor this process's user's (SO_PEERCRED), whatever the
// socket's mode: for sockets whose calls act on mounts.
func (l *Listener) RootOrOwner() *Listener {
	l.rootOrOwner = true
	return l
}

// Accept accepts the next connection (of root or the owner only, with
// RootOrOwner).
func (l *Listener) Accept() (net.Conn, error) {
	for {
		c, err := l.UnixListener.AcceptUnix()
		if err != nil || !l.rootOrOwner {
			return c, err
		}
		if uid, _, err := PeerUID(c); err == nil && (uid == 0 || uid == uint32(os.Getuid())) {
			return c, nil
		}
		c.Close()
	}
}

// PeerUID returns the uid and pid of the process at the other end of c.
func PeerUID(c syscall.Conn) (uid uint32, pid int32, err error) {
	rc, err := c.SyscallConn()
	if err != nil {
		return 0, 0, err
	}
	var cred *unix.Ucred
	var serr error
	if err := rc.Control(func(fd uintptr) { cred, serr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED) }); err != nil {
		return 0, 0, err
	}
	if serr != nil {
		return 0, 0, serr
	}
	return cred.Uid, cred.Pid, nil
}
