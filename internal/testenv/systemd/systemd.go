// Package systemd plays systemd's part for one Type=notify service with a
// file descriptor store (FileDescriptorStoreMax=), for tests on machines
// where no systemd can be booted: it runs the service's command with
// NOTIFY_SOCKET, takes the notifications of its main process only
// (NotifyAccess=main, checked with SCM_CREDENTIALS), keeps the descriptors
// it stores (FDSTORE=1, FDNAME=, FDSTOREREMOVE=1), lets go of those whose
// peer ended (as systemd polls them), and on a restart passes them to the
// next process (LISTEN_FDS, LISTEN_FDNAMES, LISTEN_PID) as systemd does.
// Stop empties the store, as a stop of the unit does. As with the default
// KillMode=control-group, stopping the service signals every process of
// its cgroup (a cgroup v2 group of its own, under
// /sys/fs/cgroup/unified or /sys/fs/cgroup), children that left its
// session included, and waits for them all.
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
	cgroup    string // the service's cgroup directory
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
	for _, root := range []string{"/sys/fs/cgroup/unified", "/sys/fs/cgroup"} {
		if _, err := os.Stat(filepath.Join(root, "cgroup.procs")); err != nil {
			continue
		}
		cg, err := os.MkdirTemp(root, "lazysnap-test-"+name+"-")
		if err == nil {
			s.cgroup = cg
			break
		}
	}
	if s.cgroup == "" {
		t.Skip("no cgroup v2 hierarchy to run a service in")
	}
	go s.receive()
	t.Cleanup(func() {
		s.Stop(t)
		conn.Close()
		os.Remove(s.cgroup)
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

// signal sends sig to every process of the service's cgroup and waits
// for them all to exit, killing them after timeout (then failing the
// test: the service did not stop in time).
func (s *Service) signal(t testing.TB, sig syscall.Signal, timeout time.Duration) {
	s.mu.Lock()
	cmd, exited := s.cmd, s.exited
	s.mu.Unlock()
	if cmd == nil {
		return
	}
	for _, pid := range s.procs() {
		syscall.Kill(pid, sig)
	}
	deadline := time.After(timeout)
	select {
	case <-exited:
	case <-deadline:
	}
	for len(s.procs()) > 0 {
		select {
		case <-deadline:
			t.Errorf("%s: processes %v still running %v after %v", s.name, s.procs(), timeout, sig)
			os.WriteFile(filepath.Join(s.cgroup, "cgroup.kill"), []byte("1"), 0o644)
			deadline = nil
		case <-time.After(20 * time.Millisecond):
		}
	}
	<-exited
	s.mu.Lock()
	s.cmd, s.main = nil, 0
	s.mu.Unlock()
}

// procs lists the processes in the service's cgroup.
func (s *Service) procs() []int {
	b, _ := os.ReadFile(filepath.Join(s.cgroup, "cgroup.procs"))
	var pids []int
	for _, f := range strings.Fields(string(b)) {
		if pid, err := strconv.Atoi(f); err == nil {
			pids = append(pids, pid)
		}
	}
	return pids
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
	// the shell joins the cgroup and execs the command: LISTEN_PID is its pid
	argv := append([]string{"/bin/sh", "-c", `echo $$ > "$LAZYSNAP_TEST_CGROUP/cgroup.procs" && export LISTEN_PID=$$ && exec "$0" "$@"`}, s.argv...)
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Env = append(os.Environ(), "NOTIFY_SOCKET="+s.conn.LocalAddr().String(), "LAZYSNAP_TEST_CGROUP="+s.cgroup)
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
