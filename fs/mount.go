package fs

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"
)

// Session is what a process needs, besides a duplicate of the /dev/fuse
// descriptor and the layer, to serve a mount another process made: the
// connection's INIT exchange and the file of its open table. It is plain
// data (JSON), for handing over with the descriptor.
type Session struct {
	Init  []byte `json:"init"`            // the kernel's INIT request
	Reply []byte `json:"reply"`           // the reply that negotiated the connection
	Opens string `json:"opens,omitempty"` // the open table's file
}

// detachWait bounds how long Detach waits for the requests being handled.
const detachWait = 5 * time.Second

// Mount is a mounted layer being served.
type Mount struct {
	mountpoint string
	l          Layer
	srv        *server
	opens      *openTable
	table      string
}

// MountLayer serves l at mountpoint until Unmount. It starts nothing in
// the background: call fetch.Layer.Start for prefetch and background
// fetch. The mount cannot be handed over (MountShared can).
func MountLayer(l Layer, mountpoint string) (*Mount, error) { return MountShared(l, mountpoint, "") }

// MountShared is MountLayer, keeping the mount's open table in the file
// openTable (created, and removed by Unmount), so that a successor can
// Adopt the mount, even after this process is killed.
func MountShared(l Layer, mountpoint, openTable string) (*Mount, error) {
	if openTable != "" {
		// a new connection: what a table there says is of another
		if err := os.Remove(openTable); err != nil && !errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("fs: open table: %w", err)
		}
	}
	m, err := newMount(l, mountpoint, openTable)
	if err != nil {
		return nil, err
	}
	fd, err := mountFUSE(mountpoint)
	if err != nil {
		m.opens.close()
		return nil, fmt.Errorf("fs: mounting %s: %w", mountpoint, err)
	}
	if m.srv, err = newServer(fd, l.OnOp()); err != nil {
		unix.Unmount(mountpoint, unix.MNT_DETACH)
		m.opens.close()
		return nil, fmt.Errorf("fs: mounting %s: %w", mountpoint, err)
	}
	m.srv.ps = fuse.NewProtocolServer(m.rawFS(), mountOptions(m.l))
	// the kernel sends INIT as soon as it has mounted
	buf := make([]byte, bufSize)
	n, err := m.srv.readRequest(buf)
	if err == nil {
		var rep []byte
		if rep, err = m.srv.handleInit(buf[:n]); err == nil {
			_, err = unix.Write(m.srv.fd, rep)
		}
	}
	if err != nil {
		unix.Unmount(mountpoint, unix.MNT_DETACH)
		m.srv.shutdown(0)
		m.opens.close()
		return nil, fmt.Errorf("fs: mounting %s: %w", mountpoint, err)
	}
	m.srv.start()
	pollHack(mountpoint)
	return m, nil
}

// pollHack makes the kernel send the connection one POLL, which go-fuse
// answers ENOSYS, so that it never sends another: the Go runtime adds
// every file it opens to its epoll set, and epoll_ctl on a file of a
// FUSE mount waits for the server's answer to a POLL while it holds a P;
// a process that opens files of its own mounts on every P would wait for
// itself. go-fuse's ProtocolServer answers for the name and inode of its
// hack (fuse.Server does this at mount, as WaitMount). The setting is the
// connection's: a process that adopts it inherits it.
func pollHack(mountpoint string) {
	fd, err := unix.Open(filepath.Join(mountpoint, ".go-fuse-epoll-hack"), unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return
	}
	unix.Poll([]unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN | unix.POLLPRI | unix.POLLOUT}}, 0)
	unix.Close(fd)
}

// Adopt serves a mount another process made (and may still serve, until
// it stops): fd is a duplicate of its /dev/fuse descriptor (Adopt makes
// its own; the caller closes fd), s what Mount.Session said, l a layer of
// the same index. The kernel then resends the requests the other process
// read and did not answer, should it have died.
func Adopt(l Layer, mountpoint string, fd *os.File, s Session) (*Mount, error) {
	m, err := newMount(l, mountpoint, s.Opens)
	if err != nil {
		return nil, err
	}
	nfd, err := unix.FcntlInt(fd.Fd(), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		m.opens.close()
		return nil, fmt.Errorf("fs: adopting %s: %w", mountpoint, err)
	}
	if m.srv, err = newServer(nfd, l.OnOp()); err != nil {
		m.opens.close()
		return nil, fmt.Errorf("fs: adopting %s: %w", mountpoint, err)
	}
	m.srv.ps = fuse.NewProtocolServer(m.rawFS(), mountOptions(m.l))
	rep, err := m.srv.handleInit(s.Init)
	if err == nil && !sameReply(rep, s.Reply) {
		err = fmt.Errorf("%w: this process negotiates other FUSE parameters than the one that mounted", ErrNotResumable)
	}
	if err != nil {
		m.srv.shutdown(0)
		m.opens.close()
		return nil, fmt.Errorf("fs: adopting %s: %w", mountpoint, err)
	}
	m.srv.start()
	if err := m.srv.resend(); err != nil && !errors.Is(err, unix.EINVAL) {
		m.srv.shutdown(0)
		m.opens.close()
		return nil, fmt.Errorf("fs: adopting %s: asking the kernel to resend: %w", mountpoint, err)
	}
	return m, nil
}

// sameReply compares two INIT replies but for their unique IDs.
func sameReply(a, b []byte) bool {
	return len(a) == len(b) && len(a) >= 16 && bytes.Equal(a[:8], b[:8]) && bytes.Equal(a[16:], b[16:])
}

func newMount(l Layer, mountpoint, table string) (*Mount, error) {
	opens, err := newOpenTable(table)
	if err != nil {
		return nil, err
	}
	return &Mount{mountpoint: mountpoint, l: l, opens: opens, table: table}, nil
}

func (m *Mount) rawFS() *rawFS {
	return &rawFS{RawFileSystem: fuse.NewDefaultRawFileSystem(), l: m.l, idx: m.l.Index(), opens: m.opens, srv: m.srv}
}

// Session returns what a successor needs to Adopt the mount.
func (m *Mount) Session() Session {
	return Session{Init: bytes.Clone(m.srv.init), Reply: bytes.Clone(m.srv.rep), Opens: m.table}
}

// Dup returns a duplicate of the mount's /dev/fuse descriptor: while it is
// open, the mount outlives this process.
func (m *Mount) Dup() (*os.File, error) { return m.srv.dup() }

// Detach stops serving the mount and leaves it mounted, for a successor
// to Adopt: the requests being handled are answered first, and those not
// yet read wait in the kernel. With no other descriptor of the connection
// open (Dup), the kernel aborts the mount.
func (m *Mount) Detach() {
	m.srv.shutdown(detachWait)
	m.opens.close()
}

// Unmount unmounts the layer.
func (m *Mount) Unmount() error {
	if err := unmountFUSE(m.mountpoint); err != nil {
		return err
	}
	m.srv.shutdown(0)
	m.opens.close()
	if m.table != "" {
		os.Remove(m.table)
	}
	return nil
}

// Passthrough reports whether the kernel accepted FUSE passthrough.
func (m *Mount) Passthrough() bool { return m.srv.passthrough() }

// IDMappable reports whether the kernel accepted FUSE_ALLOW_IDMAP: whether
// idmapped mounts of this mount can be made.
func (m *Mount) IDMappable() bool { return m.srv.idmappable() }
