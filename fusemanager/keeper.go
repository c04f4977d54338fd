package fusemanager

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"sync"
	"time"

	"github.com/lazysnap/lazysnap/internal/sockets"
	"golang.org/x/sys/unix"
)

// The fd keeper holds a duplicate of the /dev/fuse descriptor of every
// layer a manager mounts, with what a successor needs to serve it (the
// manager's remote.MountState, as JSON): a FUSE mount lives as long as a
// descriptor of its connection is open, so that with the keeper a manager
// can be restarted, upgraded or killed and its successor (Take) serves
// the same mounts; running containers see their reads wait and go on.
//
// The protocol is one request per connection on a unix SOCK_SEQPACKET
// socket (mode 0600), a JSON message each way, descriptors passed with
// SCM_RIGHTS:
//
//	{"op":"put","mountpoint":M,"state":S} + fd -> {}
//	{"op":"drop","mountpoint":M}               -> {}
//	{"op":"take"}                              -> {"mountpoint":M,"state":S} + fd, ..., {"end":true}
//
// Take leaves the keeper holding what it had: the manager that took the
// mounts is their manager until it drops them, or a successor takes them.
//
// Only root and the keeper's own user may call it (SO_PEERCRED); the
// last caller is taken to be the manager. RunKeeper exits once the keeper
// holds nothing and that manager is gone, or, after SIGTERM, once it holds
// nothing.

// keeperMsg is a message of the keeper protocol.
type keeperMsg struct {
	Op         string          `json:"op,omitempty"`
	Mountpoint string          `json:"mountpoint,omitempty"`
	State      json.RawMessage `json:"state,omitempty"`
	End        bool            `json:"end,omitempty"`
	Error      string          `json:"error,omitempty"`
}

// maxKeeperMsg bounds one message.
const maxKeeperMsg = 1 << 20

// Held is one mount the keeper holds.
type Held struct {
	Mountpoint string
	State      json.RawMessage
	FD         *os.File
}

// Keeper holds descriptors for the manager's successors.
type Keeper struct {
	mu      sync.Mutex
	held    map[string]Held
	manager int32 // pid of the last caller: the manager
}

// NewKeeper returns a keeper holding nothing, whose manager is process
// manager (its parent) until another calls.
func NewKeeper(manager int) *Keeper { return &Keeper{held: map[string]Held{}, manager: int32(manager)} }

// Manager is the pid of the last process that called the keeper.
func (k *Keeper) Manager() int {
	k.mu.Lock()
	defer k.mu.Unlock()
	return int(k.manager)
}

// Len is how many mounts the keeper holds.
func (k *Keeper) Len() int {
	k.mu.Lock()
	defer k.mu.Unlock()
	return len(k.held)
}

// Prune lets go of the mounts whose connections have ended (unmounted,
// or aborted): the device reports an error to poll then.
func (k *Keeper) Prune() {
	k.mu.Lock()
	defer k.mu.Unlock()
	for mp, h := range k.held {
		pfd := []unix.PollFd{{Fd: int32(h.FD.Fd()), Events: unix.POLLIN}}
		if _, err := unix.Poll(pfd, 0); err == nil && pfd[0].Revents&(unix.POLLERR|unix.POLLHUP|unix.POLLNVAL) != 0 {
			h.FD.Close()
			delete(k.held, mp)
		}
	}
}

// RunKeeper is the fd keeper process: it listens on sock (mode 0600),
// writes its pid to pidFile, and serves until it holds nothing and its
// manager is gone (checked every poll), or, once ctx ends (SIGTERM), until
// it holds nothing: a descriptor it lets go of ends a live mount. Mounts
// unmounted behind the managers' backs are let go of as it checks.
func RunKeeper(ctx context.Context, sock, pidFile string, poll time.Duration) error {
	l, err := sockets.Listen(ctx, "unixpacket", sock, 0o600, 0o700)
	if err != nil {
		return err
	}
	defer l.Close()
	if err := os.WriteFile(pidFile, []byte(strconv.Itoa(os.Getpid())+"\n"), 0o644); err != nil {
		l.Close()
		return err
	}
	defer os.Remove(pidFile)
	k := NewKeeper(os.Getppid())
	sctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	defer cancel()
	go func() {
		defer cancel()
		t := time.NewTicker(poll)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
			case <-sctx.Done():
				return
			case <-t.C:
			}
			k.Prune()
			if k.Len() == 0 && (ctx.Err() != nil || !processAlive(k.Manager())) {
				return
			}
		}
	}()
	return k.Serve(sctx, l.UnixListener)
}

// processAlive reports whether process pid exists and is not a zombie.
func processAlive(pid int) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if pid <= 0 || err != nil {
		return false
	}
	// pid (comm) state ...: comm may hold spaces; the state follows the last ')'
	i := bytes.LastIndexByte(b, ')')
	return i > 0 && i+2 < len(b) && b[i+2] != 'Z'
}

// Serve answers requests on l until ctx ends.
func (k *Keeper) Serve(ctx context.Context, l *net.UnixListener) error {
	go func() { <-ctx.Done(); l.Close() }()
	for {
		c, err := l.AcceptUnix()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
		go func() {
			defer c.Close()
			k.serve(c)
		}()
	}
}

func (k *Keeper) serve(c *net.UnixConn) {
	m, fd, err := recvMsg(c)
	if err != nil {
		return
	}
	reply := keeperMsg{}
	uid, pid, err := sockets.PeerUID(c)
	switch {
	case err != nil:
		reply.Error = fmt.Sprintf("peer credentials: %v", err)
		m.Op = ""
	case uid != 0 && uid != uint32(os.Getuid()):
		reply.Error = fmt.Sprintf("uid %d may not use the fd keeper (root's and uid %d's only)", uid, os.Getuid())
		m.Op = ""
	default:
		k.mu.Lock()
		k.manager = pid
		k.mu.Unlock()
	}
	switch m.Op {
	case "":
		// refused above
	case "put":
		if fd == nil || m.Mountpoint == "" {
			reply.Error = "put: no descriptor or mountpoint"
			break
		}
		k.mu.Lock()
		if old, ok := k.held[m.Mountpoint]; ok {
			old.FD.Close()
		}
		k.held[m.Mountpoint], fd = Held{Mountpoint: m.Mountpoint, State: m.State, FD: fd}, nil
		k.mu.Unlock()
	case "drop":
		k.mu.Lock()
		if old, ok := k.held[m.Mountpoint]; ok {
			old.FD.Close()
			delete(k.held, m.Mountpoint)
		}
		k.mu.Unlock()
	case "take":
		// each descriptor is sent as a duplicate made under the lock: a
		// drop or put meanwhile may close the one held
		k.mu.Lock()
		held := make([]Held, 0, len(k.held))
		var dupErr error
		for _, h := range k.held {
			d, err := unix.FcntlInt(h.FD.Fd(), unix.F_DUPFD_CLOEXEC, 0)
			if err != nil {
				dupErr = err
				break
			}
			h.FD = os.NewFile(uintptr(d), h.Mountpoint)
			held = append(held, h)
		}
		k.mu.Unlock()
		for i, h := range held {
			if dupErr == nil {
				if err := sendMsg(c, keeperMsg{Mountpoint: h.Mountpoint, State: h.State}, h.FD); err != nil {
					dupErr = err
				}
			}
			held[i].FD.Close()
		}
		if dupErr != nil {
			reply.Error = fmt.Sprintf("take: %v", dupErr)
			break
		}
		reply.End = true
	default:
		reply.Error = fmt.Sprintf("unknown op %q", m.Op)
	}
	if fd != nil {
		fd.Close()
	}
	sendMsg(c, reply, nil)
}

func sendMsg(c *net.UnixConn, m keeperMsg, fd *os.File) error {
	b, err := json.Marshal(m)
	if err != nil {
		return err
	}
	var oob []byte
	if fd != nil {
		oob = unix.UnixRights(int(fd.Fd()))
	}
	_, _, err = c.WriteMsgUnix(b, oob, nil)
	return err
}

// recvMsg reads a message and the descriptor it carries, if any.
func recvMsg(c *net.UnixConn) (keeperMsg, *os.File, error) {
	var m keeperMsg
	b, oob := make([]byte, maxKeeperMsg), make([]byte, unix.CmsgSpace(4*4))
	n, oobn, _, _, err := c.ReadMsgUnix(b, oob)
	if err != nil {
		return m, nil, err
	}
	var fd *os.File
	if oobn > 0 {
		cms, err := unix.ParseSocketControlMessage(oob[:oobn])
		if err != nil {
			return m, nil, err
		}
		for _, cm := range cms {
			fds, err := unix.ParseUnixRights(&cm)
			if err != nil {
				continue
			}
			for _, f := range fds {
				if fd == nil {
					unix.CloseOnExec(f)
					fd = os.NewFile(uintptr(f), "/dev/fuse")
				} else {
					unix.Close(f)
				}
			}
		}
	}
	if n == 0 {
		return m, fd, errors.New("keeper: empty message")
	}
	if err := json.Unmarshal(b[:n], &m); err != nil {
		if fd != nil {
			fd.Close()
		}
		return m, nil, fmt.Errorf("keeper: %w", err)
	}
	return m, fd, nil
}

// KeeperClient speaks to a keeper.
type KeeperClient struct{ sock string }

func NewKeeperClient(sock string) *KeeperClient { return &KeeperClient{sock: sock} }

func (c *KeeperClient) dial(ctx context.Context) (*net.UnixConn, error) {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "unixpacket", c.sock)
	if err != nil {
		return nil, fmt.Errorf("fd keeper at %s: %w", c.sock, err)
	}
	uc := conn.(*net.UnixConn)
	if dl, ok := ctx.Deadline(); ok {
		uc.SetDeadline(dl)
	}
	return uc, nil
}

func (c *KeeperClient) call(ctx context.Context, m keeperMsg, fd *os.File) error {
	conn, err := c.dial(ctx)
	if err != nil {
		return err
	}
	defer conn.Close()
	if err := sendMsg(conn, m, fd); err != nil {
		return err
	}
	r, rfd, err := recvMsg(conn)
	if rfd != nil {
		rfd.Close()
	}
	if err != nil {
		return fmt.Errorf("fd keeper: %w", err)
	}
	if r.Error != "" {
		return fmt.Errorf("fd keeper: %s", r.Error)
	}
	return nil
}

// Put has the keeper hold fd (a duplicate of it) with state for mountpoint.
func (c *KeeperClient) Put(ctx context.Context, mountpoint string, state json.RawMessage, fd *os.File) error {
	return c.call(ctx, keeperMsg{Op: "put", Mountpoint: mountpoint, State: state}, fd)
}

// Drop has the keeper let go of mountpoint's descriptor.
func (c *KeeperClient) Drop(ctx context.Context, mountpoint string) error {
	return c.call(ctx, keeperMsg{Op: "drop", Mountpoint: mountpoint}, nil)
}

// Take returns duplicates of every descriptor the keeper holds, with
// their states; the caller closes them.
func (c *KeeperClient) Take(ctx context.Context) ([]Held, error) {
	conn, err := c.dial(ctx)
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	if err := sendMsg(conn, keeperMsg{Op: "take"}, nil); err != nil {
		return nil, err
	}
	var out []Held
	for {
		m, fd, err := recvMsg(conn)
		if err != nil {
			for _, h := range out {
				h.FD.Close()
			}
			return nil, fmt.Errorf("fd keeper: %w", err)
		}
		if m.End {
			return out, nil
		}
		if m.Error != "" {
			for _, h := range out {
				h.FD.Close()
			}
			return nil, fmt.Errorf("fd keeper: %s", m.Error)
		}
		if fd == nil {
			continue
		}
		out = append(out, Held{Mountpoint: m.Mountpoint, State: m.State, FD: fd})
	}
}
