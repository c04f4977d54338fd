package fs

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"

	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"
)

// A mount's FUSE connection is served with go-fuse's ProtocolServer (the
// protocol without the device I/O) over a /dev/fuse descriptor of our own,
// not with fuse.Server: fuse.Server reads the kernel's INIT as its first
// request (Server.handleInit), which a process adopting a live connection
// never sees. ProtocolServer takes the INIT as any request: a fresh mount
// hands it the kernel's, an adopted one the same bytes again, saved by the
// process that mounted (Session.Init), so that both negotiate the same
// protocol.

const (
	maxWrite = 128 << 10
	// bufSize holds any request a read-only layer gets, and any reply:
	// a READ of maxWrite, an xattr value or list (64 KiB at most).
	bufSize = maxWrite + 64<<10

	opInit          = 26
	notifyInvalNode = 2 // FUSE_NOTIFY_INVAL_INODE
	notifyResend    = 7 // FUSE_NOTIFY_RESEND, protocol 7.40

	devIocBackingOpen  = 0x4010e501 // FUSE_DEV_IOC_BACKING_OPEN
	devIocBackingClose = 0x4004e502 // FUSE_DEV_IOC_BACKING_CLOSE

	// maxReaders bounds the goroutines reading and handling requests.
	maxReaders = 16
)

// ErrNotResumable is a Session a process cannot serve: one whose INIT it
// would answer with other parameters than the process that mounted it.
var ErrNotResumable = errors.New("fs: session not resumable")

// mountOptions are the options of a mount of l. A request whose handler
// panics fails with EIO and marks l bad (go-fuse recovers the panic).
func mountOptions(l Layer) *fuse.MountOptions {
	return &fuse.MountOptions{
		// the request fails with EIO, and the layer is marked bad
		PanicHandler:  func(r any) fuse.Status { l.Poison(r); return fuse.EIO },
		Name:          "lazysnap",
		FsName:        "lazysnap",
		MaxWrite:      maxWrite,
		MaxReadAhead:  1 << 20,
		MaxBackground: 64,
		// FUSE_ALLOW_IDMAP (Linux 6.12): the mount may be cloned into
		// idmapped mounts (mount_setattr MOUNT_ATTR_IDMAP), as containerd
		// does to a user-namespaced container's lower dirs; each clone
		// shows the layer's owners through its map, nothing copied. The
		// kernel checks permissions (default_permissions), so the IDs the
		// requests carry (-1 through an idmapped mount) are never looked at.
		IDMappedMount: true,
		Debug:         os.Getenv("LAZYSNAP_FUSE_DEBUG") != "",
	}
}

// server serves one FUSE connection. It reads the device with poll(2) and
// read(2) on threads of its own, not through Go's netpoller: an open of a
// file of the mount by this very process (a test, a Check) registers it
// with epoll, which sends the mount a POLL request while holding the
// epoll lock the netpoller would need to see that request.
type server struct {
	ps   *fuse.ProtocolServer
	fd   int    // the connection (non-blocking)
	stop int    // an eventfd: readers return once it is written
	init []byte // the kernel's INIT request
	rep  []byte // our reply to it
	caps uint64 // the negotiated capabilities
	// onOp is the layer's OnOp (fetch.Options.OnOp)
	onOp func(op string, took time.Duration, errno syscall.Errno)

	bufs      sync.Pool
	stopping  atomic.Bool
	abandoned atomic.Bool  // shutdown stopped waiting for the handlers
	idle      atomic.Int32 // readers waiting for a request
	nreaders  atomic.Int32
	readers   sync.WaitGroup
	handlers  sync.WaitGroup
	ended     chan struct{} // the connection ended (unmounted or aborted)
	endOnce   sync.Once
	stopOnce  sync.Once
}

// newServer prepares to serve fd (which it owns), calling onOp (if not
// nil) after each request; the caller sets ps.
func newServer(fd int, onOp func(string, time.Duration, syscall.Errno)) (*server, error) {
	if err := unix.SetNonblock(fd, true); err != nil {
		unix.Close(fd)
		return nil, err
	}
	stop, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	if err != nil {
		unix.Close(fd)
		return nil, err
	}
	s := &server{fd: fd, stop: stop, ended: make(chan struct{}), onOp: onOp}
	s.bufs.New = func() any { return &[2][]byte{make([]byte, bufSize), make([]byte, bufSize)} }
	return s, nil
}

// readRequest waits for a request and reads it into buf; io.EOF when
// stopped, ENODEV when the connection has ended.
func (s *server) readRequest(buf []byte) (int, error) {
	for {
		if s.stopping.Load() {
			return 0, io.EOF
		}
		n, err := unix.Read(s.fd, buf)
		switch err {
		case nil:
			return n, nil
		case unix.EINTR, unix.ENOENT: // interrupted before we read it
			continue
		case unix.EAGAIN: // none pending (or another reader took it)
		default:
			return 0, err
		}
		pfd := []unix.PollFd{{Fd: int32(s.fd), Events: unix.POLLIN}, {Fd: int32(s.stop), Events: unix.POLLIN}}
		if _, err := unix.Poll(pfd, -1); err != nil && err != unix.EINTR {
			return 0, err
		}
	}
}

// handleInit answers init (the kernel's INIT request, or a saved copy) and
// returns the reply.
func (s *server) handleInit(init []byte) ([]byte, error) {
	if len(init) < 40+20 || binary.LittleEndian.Uint32(init[4:]) != opInit {
		return nil, fmt.Errorf("fs: not a FUSE INIT request")
	}
	out := make([]byte, bufSize)
	n, st := s.ps.HandleRequest([][]byte{init}, [][]byte{out})
	if !st.Ok() || n < 16+52 || int32(binary.LittleEndian.Uint32(out[4:])) != 0 {
		return nil, fmt.Errorf("fs: FUSE INIT: %v", st)
	}
	s.init, s.rep = bytes.Clone(init), out[:n]
	s.caps = uint64(binary.LittleEndian.Uint32(out[16+12:])) | uint64(binary.LittleEndian.Uint32(out[16+32:]))<<32
	return s.rep, nil
}

// start starts serving.
func (s *server) start() {
	s.nreaders.Add(1)
	s.readers.Add(1)
	go s.read()
}

// read reads requests and handles each where it read it (handing a
// request to another goroutine costs a wakeup, and the P this thread holds
// in its syscalls until the scheduler takes it back): before handling
// one, a reader starts another reader when none is left waiting, up to
// maxReaders, and it exits after when enough others wait.
func (s *server) read() {
	defer s.readers.Done()
	defer s.nreaders.Add(-1)
	b := s.bufs.Get().(*[2][]byte)
	defer s.bufs.Put(b)
	for {
		s.idle.Add(1)
		n, err := s.readRequest(b[0])
		idle := s.idle.Add(-1)
		if err != nil {
			if err != io.EOF {
				// ENODEV: unmounted, or the connection aborted
				s.endOnce.Do(func() { close(s.ended) })
			}
			return
		}
		if idle == 0 && s.nreaders.Load() < maxReaders {
			s.nreaders.Add(1)
			s.readers.Add(1)
			go s.read()
		}
		s.handlers.Add(1)
		s.handle(b, n)
		if s.idle.Load() >= 2 {
			return
		}
	}
}

func (s *server) handle(b *[2][]byte, n int) {
	defer s.handlers.Done()
	in, out := b[0][:n], b[1]
	var start time.Time
	if s.onOp != nil {
		start = time.Now()
	}
	w, st := s.ps.HandleRequest([][]byte{in}, [][]byte{out})
	if !st.Ok() && n >= 16 {
		// HandleRequest could not reply: reply the error ourselves
		w = 16
		binary.LittleEndian.PutUint32(out[0:], 16)
		binary.LittleEndian.PutUint32(out[4:], uint32(-int32(st)))
		copy(out[8:16], in[8:16])
	}
	if s.onOp != nil && n >= 8 {
		// before the answer: what the requester sees next is counted
		var errno syscall.Errno
		if w >= 16 {
			errno = syscall.Errno(-int32(binary.LittleEndian.Uint32(out[4:])))
		}
		s.onOp(OpName(binary.LittleEndian.Uint32(in[4:])), time.Since(start), errno)
	}
	if w > 0 && !s.abandoned.Load() {
		// ENOENT: the request was interrupted, or the connection ended
		unix.Write(s.fd, out[:w])
	}
}

// resend asks the kernel to send again the requests a predecessor read
// and did not answer (FUSE_NOTIFY_RESEND, Linux 6.9): they come back with
// the high bit of their unique ID set, and answering one twice is
// harmless on a read-only filesystem. A kernel without it refuses
// (EINVAL); then a request in flight when the predecessor died waits
// until the mount is aborted.
func (s *server) resend() error {
	var h [16]byte
	binary.LittleEndian.PutUint32(h[0:], 16)
	binary.LittleEndian.PutUint32(h[4:], notifyResend)
	_, err := unix.Write(s.fd, h[:])
	return err
}

// invalAttr has the kernel drop the attributes it caches of nodeID
// (FUSE_NOTIFY_INVAL_INODE with a negative offset: not its pages, so no
// lock a request in flight could hold is taken). An inode the kernel does
// not hold is no error.
func (s *server) invalAttr(nodeID uint64) {
	var b [16 + 24]byte
	binary.LittleEndian.PutUint32(b[0:], uint32(len(b)))
	binary.LittleEndian.PutUint32(b[4:], notifyInvalNode)
	binary.LittleEndian.PutUint64(b[16:], nodeID)
	binary.LittleEndian.PutUint64(b[24:], ^uint64(0)) // offset -1
	unix.Write(s.fd, b[:])
}

// shutdown stops reading requests and waits up to wait for those being
// handled to be answered (a request left unanswered is the kernel's to
// resend to a successor, or is moot once unmounted). The connection's
// descriptor is closed once the last is (others may hold the connection).
func (s *server) shutdown(wait time.Duration) {
	s.stopOnce.Do(func() {
		s.stopping.Store(true)
		var one [8]byte
		binary.LittleEndian.PutUint64(one[:], 1)
		unix.Write(s.stop, one[:])
		done := make(chan struct{})
		go func() {
			s.readers.Wait() // readers handle what they read
			s.handlers.Wait()
			unix.Close(s.fd) // not before: a late handler would write to another file
			unix.Close(s.stop)
			close(done)
		}()
		select {
		case <-done:
		case <-time.After(wait):
			// what they answer now (EIO, once the layer is closed) is
			// not for the kernel: it resends them to a successor
			s.abandoned.Store(true)
		}
	})
}

func (s *server) passthrough() bool { return s.caps&fuse.CAP_PASSTHROUGH != 0 }

func (s *server) idmappable() bool { return s.caps&fuse.CAP_ALLOW_IDMAP != 0 }

// registerBacking registers f as the backing file of a passthrough open.
func (s *server) registerBacking(f *os.File) (int32, syscall.Errno) {
	m := fuse.BackingMap{Fd: int32(f.Fd())}
	r, _, errno := syscall.Syscall(syscall.SYS_IOCTL, uintptr(s.fd), devIocBackingOpen, uintptr(unsafe.Pointer(&m)))
	return int32(r), errno
}

func (s *server) closeBacking(id int32) {
	syscall.Syscall(syscall.SYS_IOCTL, uintptr(s.fd), devIocBackingClose, uintptr(unsafe.Pointer(&id)))
}

// dup returns a duplicate of the connection's descriptor.
func (s *server) dup() (*os.File, error) {
	nfd, err := unix.FcntlInt(uintptr(s.fd), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	return os.NewFile(uintptr(nfd), "/dev/fuse"), nil
}

// mountFUSE mounts a read-only FUSE filesystem at mountpoint and returns
// the connection's descriptor.
func mountFUSE(mountpoint string) (int, error) {
	var st syscall.Stat_t
	if err := syscall.Stat(mountpoint, &st); err != nil {
		return -1, err
	}
	fd, err := unix.Open("/dev/fuse", unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return -1, err
	}
	opts := []string{
		fmt.Sprintf("fd=%d", fd),
		fmt.Sprintf("rootmode=%o", st.Mode&syscall.S_IFMT),
		fmt.Sprintf("user_id=%d", os.Geteuid()),
		fmt.Sprintf("group_id=%d", os.Getegid()),
		fmt.Sprintf("max_read=%d", maxWrite),
		"allow_other", "default_permissions",
	}
	if err := unix.Mount("lazysnap", mountpoint, "fuse.lazysnap", unix.MS_RDONLY|unix.MS_NOSUID|unix.MS_NODEV, strings.Join(opts, ",")); err != nil {
		unix.Close(fd)
		return -1, err
	}
	return fd, nil
}

// unmountFUSE unmounts mountpoint, retrying a little while it is busy.
func unmountFUSE(mountpoint string) (err error) {
	delay := 5 * time.Millisecond
	for range 5 {
		if err = unix.Unmount(mountpoint, 0); err == nil || errors.Is(err, unix.EINVAL) || errors.Is(err, unix.ENOENT) {
			return nil
		}
		time.Sleep(delay)
		delay *= 2
	}
	return err
}
