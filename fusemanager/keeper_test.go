package fusemanager

import (
	"context"
	"encoding/json"
	"net"
	"os"
	"path/filepath"
	"testing"
)

func TestKeeperHoldsDescriptors(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	sock := filepath.Join(t.TempDir(), "keeper.sock")
	l, err := net.ListenUnix("unixpacket", &net.UnixAddr{Name: sock, Net: "unixpacket"})
	if err != nil {
		t.Fatal(err)
	}
	k := NewKeeper()
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
	k := NewKeeper()
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
