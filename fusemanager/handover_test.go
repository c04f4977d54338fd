package fusemanager

import (
	"context"
	"encoding/json"
	"errors"
	"net"
	"os"
	"path/filepath"
	"testing"

	"github.com/lazysnap/lazysnap/remote"
)

// TestAdoptAllRefusesBadStates: a held mount whose state cannot be
// adopted (not a state at all, or the state of another mountpoint) is not served,
// is reported, and is dropped from the holder, so that the next manager
// does not try it again; the others are left held. (Adopting live
// mounts is TestManagerHandover's, cmd/lazysnap, with FUSE.)
func TestAdoptAllRefusesBadStates(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	dir := t.TempDir()
	sock := filepath.Join(dir, KeeperSocketName)
	l, err := net.ListenUnix("unixpacket", &net.UnixAddr{Name: sock, Net: "unixpacket"})
	if err != nil {
		t.Fatal(err)
	}
	go NewKeeper(0).Serve(ctx, l)
	holder := NewKeeperClient(sock)
	for _, tc := range []struct {
		name, mountpoint, state string
		handover                bool // the error is ErrHandover
	}{
		{"not a mount state", filepath.Join(dir, "a"), "[1]", false},
		{"another mountpoint's state", filepath.Join(dir, "b"), `{"mountpoint":"/elsewhere"}`, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r, w, err := os.Pipe() // a pipe stands for /dev/fuse: nothing reaches Adopt
			if err != nil {
				t.Fatal(err)
			}
			defer r.Close()
			err = holder.Put(ctx, tc.mountpoint, json.RawMessage(tc.state), w)
			w.Close()
			if err != nil {
				t.Fatal(err)
			}
			fsys := remote.New(nil, remote.Options{Root: t.TempDir()})
			defer fsys.Close()
			h := &HandoverFS{FS: fsys, Holder: holder}
			n, err := h.AdoptAll(ctx)
			if n != 0 || err == nil || errors.Is(err, ErrHandover) != tc.handover {
				t.Fatalf("AdoptAll = %d, %v; want 0 and an error (ErrHandover: %v)", n, err, tc.handover)
			}
			held, err := holder.Take(ctx)
			if err != nil {
				t.Fatal(err)
			}
			for _, m := range held {
				m.FD.Close()
			}
			if len(held) != 0 {
				t.Fatalf("still held after a failed adoption: %+v", held)
			}
		})
	}
}
