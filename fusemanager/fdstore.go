package fusemanager

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"

	"golang.org/x/sys/unix"
)

// Holder holds each mount's /dev/fuse descriptor, with its state, for the
// manager's successor: the fd keeper (KeeperClient) or systemd's file
// descriptor store (FDStore).
type Holder interface {
	// Put holds (a duplicate of) fd with state for mountpoint.
	Put(ctx context.Context, mountpoint string, state json.RawMessage, fd *os.File) error
	// Drop lets go of mountpoint's descriptor; "" changes nothing.
	Drop(ctx context.Context, mountpoint string) error
	// Take returns what a predecessor left; the caller closes the files.
	Take(ctx context.Context) ([]Held, error)
}

var (
	_ Holder = (*KeeperClient)(nil)
	_ Holder = (*FDStore)(nil)
)

// fdNamePrefix starts the names of the descriptors FDStore stores.
const fdNamePrefix = "lazysnap-fuse-"

// FDStore keeps the mounts' descriptors in systemd's file descriptor
// store (a unit with FileDescriptorStoreMax=): Put sends one with
// "FDSTORE=1" and a name derived from its mountpoint over the notify
// socket, Drop sends "FDSTOREREMOVE=1". systemd holds them while the
// unit restarts (systemctl restart, Restart= after a crash) and passes
// them to the next manager (LISTEN_FDS, LISTEN_FDNAMES), which Take
// returns; it lets go of them when the unit stops, and of one whose
// connection ends (it polls them). A mount's state is a file beside its
// open table (stateDir), named as its descriptor.
type FDStore struct {
	notify   string // NOTIFY_SOCKET
	stateDir string
	mu       sync.Mutex
	passed   map[string]*os.File // by name, until Take
}

// NewFDStore returns the store of the unit whose notify socket is
// notifySocket, with the descriptors systemd passed at start (named as
// LISTEN_FDNAMES names them: go-systemd's activation.Files).
func NewFDStore(notifySocket, stateDir string, passed []*os.File) (*FDStore, error) {
	if err := os.MkdirAll(stateDir, 0o700); err != nil {
		return nil, err
	}
	s := &FDStore{notify: notifySocket, stateDir: stateDir, passed: map[string]*os.File{}}
	for _, f := range passed {
		if strings.HasPrefix(f.Name(), fdNamePrefix) {
			s.passed[f.Name()] = f
		} else {
			f.Close()
		}
	}
	// the states of descriptors systemd no longer holds (it lets go of
	// those whose connection ended, and of all at a stop)
	stale, _ := filepath.Glob(filepath.Join(stateDir, fdNamePrefix+"*.state"))
	for _, p := range stale {
		if _, ok := s.passed[strings.TrimSuffix(filepath.Base(p), ".state")]; !ok {
			os.Remove(p)
		}
	}
	return s, nil
}

// fdName is the store's name of mountpoint's descriptor (FDNAME= allows
// up to 255 characters, no ':').
func fdName(mountpoint string) string {
	h := sha256.Sum256([]byte(mountpoint))
	return fdNamePrefix + hex.EncodeToString(h[:16])
}

func (s *FDStore) statePath(name string) string { return filepath.Join(s.stateDir, name+".state") }

func (s *FDStore) Put(ctx context.Context, mountpoint string, state json.RawMessage, fd *os.File) error {
	name := fdName(mountpoint)
	b, err := json.Marshal(keeperMsg{Mountpoint: mountpoint, State: state})
	if err != nil {
		return err
	}
	tmp := s.statePath(name) + ".tmp"
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		return err
	}
	if err := os.Rename(tmp, s.statePath(name)); err != nil {
		return err
	}
	// a remount of the mountpoint replaces the descriptor stored before
	s.notifyMsg("FDSTOREREMOVE=1\nFDNAME="+name, nil)
	return s.notifyMsg("FDSTORE=1\nFDNAME="+name, fd)
}

func (s *FDStore) Drop(ctx context.Context, mountpoint string) error {
	if mountpoint == "" {
		return nil
	}
	name := fdName(mountpoint)
	os.Remove(s.statePath(name))
	return s.notifyMsg("FDSTOREREMOVE=1\nFDNAME="+name, nil)
}

// Take returns the descriptors systemd passed at start whose state is
// known, once; the others are removed from the store.
func (s *FDStore) Take(ctx context.Context) ([]Held, error) {
	s.mu.Lock()
	passed := s.passed
	s.passed = map[string]*os.File{}
	s.mu.Unlock()
	var out []Held
	var errs []error
	for name, f := range passed {
		var m keeperMsg
		b, err := os.ReadFile(s.statePath(name))
		if err == nil {
			err = json.Unmarshal(b, &m)
		}
		if err == nil && fdName(m.Mountpoint) != name {
			err = errors.New("state of another mountpoint")
		}
		if err != nil {
			f.Close()
			errs = append(errs, fmt.Errorf("stored descriptor %s: %w", name, err))
			s.notifyMsg("FDSTOREREMOVE=1\nFDNAME="+name, nil)
			continue
		}
		out = append(out, Held{Mountpoint: m.Mountpoint, State: m.State, FD: f})
	}
	return out, errors.Join(errs...)
}

// notifyMsg sends msg to systemd's notify socket, with fd if not nil
// (SCM_RIGHTS).
func (s *FDStore) notifyMsg(msg string, fd *os.File) error {
	sock, err := unix.Socket(unix.AF_UNIX, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("fusemanager: systemd notify socket: %w", err)
	}
	defer unix.Close(sock)
	var oob []byte
	if fd != nil {
		oob = unix.UnixRights(int(fd.Fd()))
	}
	// a leading '@' names an abstract socket, as in NOTIFY_SOCKET
	if err := unix.Sendmsg(sock, []byte(msg), oob, &unix.SockaddrUnix{Name: s.notify}, 0); err != nil {
		return fmt.Errorf("fusemanager: systemd notify socket %s: %w", s.notify, err)
	}
	return nil
}
