package fusemanager

import (
	"context"
	"encoding/json"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// TestFDStore: Put stores the descriptor under its mountpoint's name
// (after removing an older one), Drop removes it; a successor given the
// stored descriptors (as systemd passes them) takes those whose state it
// finds, and has systemd let go of the others.
func TestFDStore(t *testing.T) {
	dir := t.TempDir()
	notify := filepath.Join(dir, "notify")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: notify, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	type msg struct {
		text string
		fd   *os.File
	}
	recv := func() msg {
		t.Helper()
		buf, oob := make([]byte, 4096), make([]byte, 256)
		n, oobn, _, _, err := conn.ReadMsgUnix(buf, oob)
		if err != nil {
			t.Fatal(err)
		}
		m := msg{text: string(buf[:n])}
		cms, _ := unix.ParseSocketControlMessage(oob[:oobn])
		for _, cm := range cms {
			if fds, err := unix.ParseUnixRights(&cm); err == nil && len(fds) == 1 {
				m.fd = os.NewFile(uintptr(fds[0]), "stored")
			}
		}
		return m
	}
	ctx := context.Background()
	stateDir := filepath.Join(dir, "handover")
	s, err := NewFDStore(notify, stateDir, nil)
	if err != nil {
		t.Fatal(err)
	}
	r, w, _ := os.Pipe()
	defer r.Close()
	if err := s.Put(ctx, "/mnt/a", json.RawMessage(`{"a":1}`), w); err != nil {
		t.Fatal(err)
	}
	w.Close()
	name := fdName("/mnt/a")
	if m := recv(); m.text != "FDSTOREREMOVE=1\nFDNAME="+name || m.fd != nil {
		t.Fatalf("first message %q (fd %v), want the removal of an older one", m.text, m.fd)
	}
	m := recv()
	if m.text != "FDSTORE=1\nFDNAME="+name || m.fd == nil {
		t.Fatalf("second message %q (fd %v), want the descriptor stored", m.text, m.fd)
	}
	if strings.ContainsAny(name, ":\n") || len(name) > 255 {
		t.Fatalf("FDNAME %q is not valid", name)
	}
	if err := s.Drop(ctx, "/mnt/b"); err != nil {
		t.Fatal(err)
	}
	if m := recv(); m.text != "FDSTOREREMOVE=1\nFDNAME="+fdName("/mnt/b") {
		t.Fatalf("drop sent %q", m.text)
	}

	// the successor: what systemd passes, named; one has no state
	named := func(f *os.File, name string) *os.File {
		defer f.Close()
		fd, err := unix.Dup(int(f.Fd()))
		if err != nil {
			t.Fatal(err)
		}
		return os.NewFile(uintptr(fd), name)
	}
	stray, _ := os.Open(os.DevNull)
	other, _ := os.Open(os.DevNull)
	next, err := NewFDStore(notify, stateDir, []*os.File{named(m.fd, name), named(stray, fdName("/mnt/gone")), named(other, "somebody-else")})
	if err != nil {
		t.Fatal(err)
	}
	held, err := next.Take(ctx)
	if err == nil || !strings.Contains(err.Error(), fdName("/mnt/gone")) {
		t.Fatalf("Take's error %v, want the stray descriptor named", err)
	}
	if len(held) != 1 || held[0].Mountpoint != "/mnt/a" || string(held[0].State) != `{"a":1}` {
		t.Fatalf("took %+v", held)
	}
	if _, err := held[0].FD.Write([]byte("x")); err != nil {
		t.Fatal(err)
	}
	if b := make([]byte, 1); func() bool { n, _ := r.Read(b); return n != 1 || b[0] != 'x' }() {
		t.Fatal("the descriptor taken is not the one stored")
	}
	if m := recv(); m.text != "FDSTOREREMOVE=1\nFDNAME="+fdName("/mnt/gone") {
		t.Fatalf("the stray descriptor: %q, want it removed from the store", m.text)
	}
	if again, _ := next.Take(ctx); len(again) != 0 {
		t.Fatalf("a second Take returned %d", len(again))
	}
	if _, err := os.Stat(next.statePath(name)); err != nil {
		t.Fatalf("the state of a mount held: %v", err)
	}
	// a manager started with nothing passed (the unit was stopped)
	// forgets the states
	if _, err := NewFDStore(notify, stateDir, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(next.statePath(name)); !os.IsNotExist(err) {
		t.Fatalf("the state of a descriptor systemd no longer holds: %v", err)
	}
}
