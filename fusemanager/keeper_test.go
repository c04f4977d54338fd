package fusemanager

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/lazysnap/lazysnap/internal/testenv/asuser"
)

func TestKeeperHoldsDescriptors(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	sock := filepath.Join(t.TempDir(), "keeper.sock")
	l, err := net.ListenUnix("unixpacket", &net.UnixAddr{Name: sock, Net: "unixpacket"})
	if err != nil {
		t.Fatal(err)
	}
	k := NewKeeper(0)
	go k.Serve(ctx, l)
	c := NewKeeperClient(sock)

	// a pipe stands for a /dev/fuse descriptor: what is written to the
	// write end the keeper holds comes out of the read end
	put := func(mp string) *os.File {
		r, w, err := os.Pipe()
		if err != nil {
			t.Fatal(err)
		}
		defer w.Close()
		if err := c.Put(ctx, mp, json.RawMessage(`{"mp":"`+mp+`"}`), w); err != nil {
			t.Fatal(err)
		}
		return r
	}
	ra, rb := put("/a"), put("/b")
	defer ra.Close()
	defer rb.Close()
	if err := c.Drop(ctx, "/b"); err != nil {
		t.Fatal(err)
	}
	held, err := c.Take(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(held) != 1 || held[0].Mountpoint != "/a" || string(held[0].State) != `{"mp":"/a"}` {
		t.Fatalf("took %+v, want /a only", held)
	}
	if _, err := held[0].FD.Write([]byte("x")); err != nil {
		t.Fatal(err)
	}
	held[0].FD.Close()
	buf := make([]byte, 1)
	if n, err := ra.Read(buf); n != 1 || buf[0] != 'x' {
		t.Fatalf("the descriptor taken is not the one put: %d %v", n, err)
	}
	// dropped: the keeper closed its copy of /b's write end
	if n, err := rb.Read(buf); n != 0 || err == nil {
		t.Fatalf("/b's descriptor is still held: %d %v", n, err)
	}
	// taking leaves the keeper holding them
	if again, err := c.Take(ctx); err != nil || len(again) != 1 {
		t.Fatalf("second take: %d, %v", len(again), err)
	} else {
		again[0].FD.Close()
	}
}

func TestKeeperPrunesEndedConnections(t *testing.T) {
	k := NewKeeper(0)
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	k.held["/a"] = Held{Mountpoint: "/a", FD: w}
	k.Prune()
	if k.Len() != 1 {
		t.Fatal("pruned a live descriptor")
	}
	r.Close() // as an ended FUSE connection, the descriptor polls an error
	k.Prune()
	if k.Len() != 0 {
		t.Fatal("kept an ended descriptor")
	}
}

// TestKeeperPeerCredentials: a process of another user that can reach
// the keeper's socket (here made world-writable) is refused put and take;
// root is served.
func TestKeeperPeerCredentials(t *testing.T) {
	dir := asuser.Dir(t)
	sock := filepath.Join(dir, "keeper.sock")
	l, err := net.ListenUnix("unixpacket", &net.UnixAddr{Name: sock, Net: "unixpacket"})
	if err != nil {
		t.Fatal(err)
	}
	os.Chmod(sock, 0o777)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	k := NewKeeper(0)
	go k.Serve(ctx, l)
	r, w, _ := os.Pipe()
	defer r.Close()
	if err := NewKeeperClient(sock).Put(ctx, "/a", json.RawMessage(`{}`), w); err != nil {
		t.Fatalf("root's put: %v", err)
	}
	w.Close()
	for _, op := range []string{"take", "put"} {
		t.Run(op, func(t *testing.T) {
			out, _ := asuser.Command(dir, "TestKeeperClientProcess", 65534, "LAZYSNAP_KEEPER_CLIENT="+op+":"+sock).CombinedOutput()
			if !strings.Contains(string(out), "may not use the fd keeper") {
				t.Fatalf("uid 65534's %s: %s", op, out)
			}
		})
	}
	if k.Len() != 1 || k.Manager() != os.Getpid() {
		t.Fatalf("after the refused calls the keeper holds %d, manager %d; want 1, %d", k.Len(), k.Manager(), os.Getpid())
	}
}

// TestKeeperClientProcess is the other user's client of
// TestKeeperPeerCredentials (it does nothing in a test run).
func TestKeeperClientProcess(t *testing.T) {
	op, sock, ok := strings.Cut(os.Getenv("LAZYSNAP_KEEPER_CLIENT"), ":")
	if !ok {
		t.Skip("the client process of TestKeeperPeerCredentials")
	}
	c := NewKeeperClient(sock)
	var err error
	switch op {
	case "take":
		_, err = c.Take(context.Background())
	case "drop":
		err = c.Drop(context.Background(), "")
	case "put":
		r, w, _ := os.Pipe()
		defer r.Close()
		err = c.Put(context.Background(), "/b", json.RawMessage(`{}`), w)
	}
	fmt.Println("client:", err)
}

// TestRunKeeperExitsWhenOrphaned: a keeper whose manager (its last
// caller) is gone stays while it holds a live descriptor, and exits once
// it holds nothing.
func TestRunKeeperExitsWhenOrphaned(t *testing.T) {
	dir := t.TempDir()
	sock, pidFile := filepath.Join(dir, "k.sock"), filepath.Join(dir, "k.pid")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- RunKeeper(ctx, sock, pidFile, 20*time.Millisecond) }()
	c := NewKeeperClient(sock)
	for i := 0; ; i++ {
		if err := c.Drop(ctx, ""); err == nil {
			break
		} else if i == 500 {
			t.Fatal(err)
		}
		time.Sleep(10 * time.Millisecond)
	}
	r, w, _ := os.Pipe()
	defer r.Close()
	if err := c.Put(ctx, "/a", json.RawMessage(`{}`), w); err != nil {
		t.Fatal(err)
	}
	w.Close()
	// a manager process calls the keeper, then exits
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	manager := exec.Command(self, "-test.run=^TestKeeperClientProcess$")
	manager.Env = append(os.Environ(), "LAZYSNAP_KEEPER_CLIENT=drop:"+sock)
	if out, err := manager.CombinedOutput(); err != nil || !strings.Contains(string(out), "client: <nil>") {
		t.Fatalf("the manager's call: %v\n%s", err, out)
	}
	select {
	case err := <-done:
		t.Fatalf("the keeper exited holding a live descriptor: %v", err)
	case <-time.After(300 * time.Millisecond):
	}
	r.Close() // the mount ends
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the keeper did not exit holding nothing, its manager gone")
	}
	if _, err := os.Stat(pidFile); !os.IsNotExist(err) {
		t.Fatalf("pid file after exit: %v", err)
	}
	if _, err := os.Stat(sock); !os.IsNotExist(err) {
		t.Fatalf("socket after exit: %v", err)
	}
}
