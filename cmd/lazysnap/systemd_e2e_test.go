package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/lazysnap/lazysnap/fusemanager"
)

// TestManagerRestartUnderSystemd: the fuse manager runs as
// lazysnap-fuse-manager.service runs it (Type=notify with a file
// descriptor store; internal/testenv/systemd plays systemd) and serve with
// --start-fuse-manager=false. Under a running container of a lazy image,
// `systemctl restart` of the manager (SIGTERM, the store handed to the
// next process through LISTEN_FDS), its crash (SIGKILL, Restart=always)
// and a restart of serve each leave the container reading files nobody
// had read, right, through the mounts it started with: a read in flight
// across the manager's restart finishes too. No fd keeper runs.
func TestManagerRestartUnderSystemd(t *testing.T) {
	s := startStackWith(t, "[fetch]\n  no_background = true\n", stackOptions{systemd: true})
	_, esgzDir := buildImages(t, "systemd")
	layers := busyboxLayers(t, "systemd")
	ref, _ := s.pushLayout(t, esgzDir, "systemd", "esgz")
	if out := s.pull(t, ref); !strings.Contains(out, "2 of 2 layers lazy") {
		t.Fatalf("pull: %s\nlazysnap log:\n%s", out, s.log())
	}
	s.runSleeper(t, ref, "long")
	if n := len(s.manager.Stored()); n != 2 {
		t.Fatalf("systemd's store holds %d descriptors, want one per lazy layer (2)\n%s", n, s.log())
	}
	read := func(step string, layer int, path string) {
		t.Helper()
		if got := s.readSum(t, "long", "/"+path, sha256Of(t, layers[layer], path)); got != "ok" {
			t.Fatalf("%s: read of %s in the running container: %s\n%s", step, path, got, s.log())
		}
	}
	first := s.manager.PID()

	// a read in flight while systemctl restart runs
	inflight := make(chan string, 1)
	want := sha256Of(t, layers[1], "data/big")
	go func() { inflight <- s.readSum(t, "long", "/data/big", want) }()
	s.manager.Restart(t, shutdownBound)
	s.manager.Expect(t, "READY=1", time.Minute)
	select {
	case got := <-inflight:
		if got != "ok" {
			t.Fatalf("the read in flight across the restart: %s\n%s", got, s.log())
		}
	case <-time.After(2 * time.Minute):
		t.Fatalf("the read in flight across the restart did not finish\n%s", s.log())
	}
	read("after systemctl restart", 1, "data/other")
	if next := s.manager.PID(); next == first || s.managerPID() != next {
		t.Fatalf("after the restart serve uses manager %d, the service runs %d (was %d)", s.managerPID(), next, first)
	}

	s.manager.Kill(t)
	s.manager.Expect(t, "READY=1", time.Minute)
	read("after a crash", 0, "bin/busybox")

	s.stopLazysnap(t)
	s.startLazysnap(t)
	read("after serve's restart", 1, "data/variant")

	rep := s.status(t)
	if sn := rep.Snapshotter; sn == nil || sn.Remounts != 0 || sn.RestoreFailures != 0 {
		t.Fatalf("the snapshotter reports %+v, want the layers adopted, none remounted", rep.Snapshotter)
	}
	if len(rep.Images) == 0 {
		t.Errorf("the last manager reports no image: it did not adopt the mounts\n%s", s.log())
	}
	if _, err := os.Stat(filepath.Join(s.dir, "root", fusemanager.KeeperPIDName)); err == nil {
		t.Error("an fd keeper runs beside the manager under systemd")
	}
	if n := len(s.manager.Stored()); n != 2 {
		t.Errorf("systemd's store holds %d descriptors after the restarts, want 2", n)
	}
	// removing the container and its image lets go of the descriptors
	s.ctrd.Ctr(t, "tasks", "kill", "-s", "KILL", "long")
	for i := 0; i < 50; i++ {
		if _, err := s.ctrd.Ctr(t, "tasks", "rm", "-f", "long"); err == nil {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	s.ctr(t, "containers", "rm", "long")
	s.ctr(t, "images", "rm", "--sync", ref)
	if names := s.manager.Stored(); len(names) != 0 {
		t.Errorf("systemd's store holds %v after the image's removal, want nothing\n%s", names, s.log())
	}
}
