package main

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestServicesAsSystemdRunsThem runs serve and the fuse manager as the
// units in dist/systemd do: the manager a process of its own, serve with
// --start-fuse-manager=false, each told systemd's notify socket. serve,
// started first, waits for the manager and uses it rather than starting
// one; each says READY=1 once it serves; serve's restart (STOPPING=1, then
// READY=1 again) leaves the manager running.
func TestServicesAsSystemdRunsThem(t *testing.T) {
	bin := lazysnapBinary(t)
	dir, err := os.MkdirTemp("/tmp", "lzsd-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	cfg := filepath.Join(dir, "config.toml")
	text := fmt.Sprintf("root = %q\naddress = %q\n[registry]\n  hosts_dir = %q\n", filepath.Join(dir, "root"), filepath.Join(dir, "lazysnap.sock"), dir)
	if err := os.WriteFile(cfg, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	// daemon starts one of the units' commands with its notify socket and
	// returns it and what it notifies
	daemon := func(name string, args ...string) (*exec.Cmd, <-chan string) {
		sock := filepath.Join(dir, name+".notify")
		os.Remove(sock)
		conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: sock, Net: "unixgram"})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { conn.Close() })
		states := make(chan string, 16)
		go func() {
			buf := make([]byte, 4096)
			for {
				n, err := conn.Read(buf)
				if err != nil {
					close(states)
					return
				}
				states <- string(buf[:n])
			}
		}()
		cmd := exec.Command(bin, args...)
		cmd.Env = append(os.Environ(), "NOTIFY_SOCKET="+sock)
		logf, err := os.Create(filepath.Join(dir, name+".log"))
		if err != nil {
			t.Fatal(err)
		}
		cmd.Stdout, cmd.Stderr = logf, logf
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { cmd.Process.Signal(syscall.SIGTERM); cmd.Wait() })
		return cmd, states
	}
	expect := func(name string, states <-chan string, want string) {
		t.Helper()
		select {
		case got := <-states:
			if !strings.Contains(got, want) {
				t.Fatalf("%s notified %q, want %s", name, got, want)
			}
		case <-time.After(60 * time.Second):
			b, _ := os.ReadFile(filepath.Join(dir, name+".log"))
			t.Fatalf("%s did not notify %s within a minute; its log:\n%s", name, want, b)
		}
	}
	serve, serveStates := daemon("serve", "serve", "--config", cfg, "--start-fuse-manager=false")
	manager, managerStates := daemon("manager", "fuse-manager", "--config", cfg)
	expect("manager", managerStates, "READY=1")
	expect("serve", serveStates, "READY=1")
	managerPID := func() int {
		b, _ := os.ReadFile(filepath.Join(dir, "root", managerPIDName))
		pid, _ := strconv.Atoi(strings.TrimSpace(string(b)))
		return pid
	}
	if pid := managerPID(); pid != manager.Process.Pid {
		t.Fatalf("serve uses manager %d, want the service's %d", pid, manager.Process.Pid)
	}

	serve.Process.Signal(syscall.SIGTERM)
	expect("serve", serveStates, "STOPPING=1")
	serve.Wait()
	if !alive(manager.Process.Pid) {
		t.Fatal("the fuse manager exited with serve")
	}
	_, serveStates = daemon("serve-again", "serve", "--config", cfg, "--start-fuse-manager=false")
	expect("serve-again", serveStates, "READY=1")
	if pid := managerPID(); pid != manager.Process.Pid {
		t.Fatalf("restarted serve uses manager %d, want %d", pid, manager.Process.Pid)
	}
	select {
	case s := <-managerStates:
		t.Errorf("the manager notified %q while serve restarted", s)
	default:
	}
}
