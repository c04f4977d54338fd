// Package systemd plays systemd's part for one Type=notify service with a
// file descriptor store (FileDescriptorStoreMax=), for tests on machines
// where no systemd can be booted: it runs the service's command with
// NOTIFY_SOCKET, takes the notifications of its main process only
// (NotifyAccess=main, checked with SCM_CREDENTIALS), keeps the descriptors
// it stores (FDSTORE=1, FDNAME=, FDSTOREREMOVE=1), lets go of those whose
// peer ended (as systemd polls them), and on a restart passes them to the
// next process (LISTEN_FDS, LISTEN_FDNAMES, LISTEN_PID) as systemd does.
// Stop empties the store, as a stop of the unit does.
package systemd

import (
	"bytes"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// Service is one service and its store.
type Service struct {
	name, dir string
	argv      []string
	conn      *net.UnixConn
	states    chan string

	mu     sync.Mutex
	stored []stored
	main   int // the main process's pid, 0 when stopped
	cmd    *exec.Cmd
	exited chan struct{}
}

type stored struct {
	name string
	f    *os.File
}

// Start starts argv as a service whose notify socket and log (NAME.log)
// are in dir; Cleanup stops it.
func Start(t testing.TB, dir, name string, argv ...string) *Service {
	t.Helper()
	sock := filepath.Join(dir, name+".notify")
	os.Remove(sock)
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: sock, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	rc, _ := conn.SyscallConn()
	rc.Control(func(fd uintptr) { unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_PASSCRED, 1) })
	s := &Service{name: name, dir: dir, argv: argv, conn: conn, states: make(chan string, 64)}
	go s.receive()
	t.Cleanup(func() {
		s.Stop(t)
		conn.Close()
	})
	s.start(t)
	return s
}

// Log is the service's output so far.
func (s *Service) Log() string {
	b, _ := os.ReadFile(filepath.Join(s.dir, s.name+".log"))
	return string(b)
}

// PID is the main process's pid, 0 when it is stopped.
func (s *Service) PID() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.main
}

// Stored is the names of the descriptors in the store, in the order
// they were stored.
func (s *Service) Stored() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.pruneLocked()
	var names []string
	for _, st := range s.stored {
		names = append(names, st.name)
	}
	return names
}

// Expect waits up to timeout for a notification holding want (READY=1,
// STOPPING=1) and fails the test without one.
func (s *Service) Expect(t testing.TB, want string, timeout time.Duration) {
	t.Helper()
	deadline := time.After(timeout)
	for {
		select {
		case got := <-s.states:
			if strings.Contains(got, want) {
				return
			}
		case <-deadline:
			t.Fatalf("%s did not notify %s within %v; its log:\n%s", s.name, want, timeout, s.Log())
		}
	}
}

// Restart is systemctl restart: SIGTERM, then SIGKILL after stopTimeout,
// then the command again with the store passed.
func (s *Service) Restart(t testing.TB, stopTimeout time.Duration) {
	t.Helper()
	s.signal(t, syscall.SIGTERM, stopTimeout)
	s.start(t)
}

// Kill is a crash and Restart=always: SIGKILL, then the command again
// with the store passed.
func (s *Service) Kill(t testing.TB) {
	t.Helper()
	s.signal(t, syscall.SIGKILL, time.Minute)
	s.start(t)
}

// Stop is systemctl stop: SIGTERM, SIGKILL after 10 s, and the store
// emptied.
func (s *Service) Stop(t testing.TB) {
	s.signal(t, syscall.SIGTERM, 10*time.Second)
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, st := range s.stored {
		st.f.Close()
	}
	s.stored = nil
}

// signal sends sig to the main process and waits for it to exit, killing
// it after timeout (then failing the test: it did not stop in time).
func (s *Service) signal(t testing.TB, sig syscall.Signal, timeout time.Duration) {
	s.mu.Lock()
	cmd, exited := s.cmd, s.exited
	s.mu.Unlock()
	if cmd == nil {
		return
	}
	cmd.Process.Signal(sig)
	select {
	case <-exited:
	case <-time.After(timeout):
		cmd.Process.Kill()
		<-exited
		t.Errorf("%s did not exit within %v of %v", s.name, timeout, sig)
	}
	s.mu.Lock()
	s.cmd, s.main = nil, 0
	s.mu.Unlock()
}

func (s *Service) start(t testing.TB) {
	t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	s.pruneLocked()
	var names []string
	var files []*os.File
	for _, st := range s.stored {
		names, files = append(names, st.name), append(files, st.f)
	}
	// LISTEN_PID is the pid of the process that execs the command
	argv := append([]string{"/bin/sh", "-c", `export LISTEN_PID=$$; exec "$0" "$@"`}, s.argv...)
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Env = append(os.Environ(), "NOTIFY_SOCKET="+s.conn.LocalAddr().String())
	if len(files) > 0 {
		cmd.Env = append(cmd.Env, "LISTEN_FDS="+strconv.Itoa(len(files)), "LISTEN_FDNAMES="+strings.Join(names, ":"))
		cmd.ExtraFiles = files
	}
	logf, err := os.OpenFile(filepath.Join(s.dir, s.name+".log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close()
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	s.cmd, s.main, s.exited = cmd, cmd.Process.Pid, exited
}

// pruneLocked lets go of stored descriptors whose peer has ended (a FUSE
// connection unmounted or aborted polls POLLERR), as systemd does.
func (s *Service) pruneLocked() {
	kept := s.stored[:0]
	for _, st := range s.stored {
		pfd := []unix.PollFd{{Fd: int32(st.f.Fd()), Events: unix.POLLIN}}
		if _, err := unix.Poll(pfd, 0); err == nil && pfd[0].Revents&(unix.POLLERR|unix.POLLHUP|unix.POLLNVAL) != 0 {
			st.f.Close()
			continue
		}
		kept = append(kept, st)
	}
	s.stored = kept
}

// receive takes notifications until the socket is closed.
func (s *Service) receive() {
	buf, oob := make([]byte, 4096), make([]byte, 4096)
	for {
		n, oobn, _, _, err := s.conn.ReadMsgUnix(buf, oob)
		if err != nil {
			return
		}
		var fds []int
		sender := -1
		cms, _ := unix.ParseSocketControlMessage(oob[:oobn])
		for _, cm := range cms {
			if r, err := unix.ParseUnixRights(&cm); err == nil {
				fds = append(fds, r...)
			} else if c, err := unix.ParseUnixCredentials(&cm); err == nil {
				sender = int(c.Pid)
			}
		}
		s.handle(string(buf[:n]), sender, fds)
	}
}

func (s *Service) handle(msg string, sender int, fds []int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if sender != s.main || s.main == 0 {
		// NotifyAccess=main: systemd ignores other processes
		for _, fd := range fds {
			unix.Close(fd)
		}
		return
	}
	vars := map[string]string{}
	for _, line := range strings.Split(msg, "\n") {
		if k, v, ok := strings.Cut(line, "="); ok {
			vars[k] = v
		}
	}
	switch {
	case vars["FDSTORE"] == "1":
		for _, fd := range fds {
			unix.CloseOnExec(fd)
			s.stored = append(s.stored, stored{name: vars["FDNAME"], f: os.NewFile(uintptr(fd), vars["FDNAME"])})
		}
		return
	case vars["FDSTOREREMOVE"] == "1":
		kept := s.stored[:0]
		for _, st := range s.stored {
			if st.name == vars["FDNAME"] {
				st.f.Close()
				continue
			}
			kept = append(kept, st)
		}
		s.stored = kept
	}
	for _, fd := range fds {
		unix.Close(fd) // descriptors without FDSTORE=1 are not kept
	}
	select {
	case s.states <- msg:
	default:
	}
}

// String describes the service, for failure messages.
func (s *Service) String() string {
	var b bytes.Buffer
	fmt.Fprintf(&b, "%s (pid %d, %d stored)", s.name, s.PID(), len(s.Stored()))
	return b.String()
}
