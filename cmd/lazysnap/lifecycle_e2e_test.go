package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/lazysnap/lazysnap/ops"
)

// TestRestartUnderRunningContainer: a container runs from a lazy image
// while lazysnap serve is killed (SIGKILL) and started again. The FUSE
// mounts live in the fuse manager, so the container reads files it never
// read before, with serve down and after it is back, byte for byte; the
// new serve keeps the live mounts (restored, not remounted) and starts new
// containers. When the fuse manager itself is killed, the running
// container's layers are gone (as any FUSE server's), but serve starts a
// new manager and new containers run again without restarting serve.
func TestRestartUnderRunningContainer(t *testing.T) {
	s := startStack(t, "[fetch]\n  no_background = true\n")
	_, esgzDir := buildImages(t, "restart")
	layers := busyboxLayers(t, "restart")
	ref, _ := s.pushLayout(t, esgzDir, "restart", "esgz")
	if out := s.pull(t, ref); !strings.Contains(out, "2 of 2 layers lazy") {
		t.Fatalf("pull: %s\nlazysnap log:\n%s", out, s.log())
	}
	s.runSleeper(t, ref, "long")
	sum := func(layer []byte, path string) string {
		t.Helper()
		return s.readSum(t, "long", "/"+path, sha256Of(t, layer, path))
	}
	manager := s.managerPID()
	if manager == 0 {
		t.Fatalf("no fuse manager runs:\n%s", s.log())
	}

	// serve dies without a chance to clean up
	s.cmd.Process.Kill()
	s.cmd.Wait()
	s.cmd = nil
	if got := sum(layers[1], "data/other"); got != "ok" {
		t.Fatalf("with serve down: read of an unread file: %s\n%s", got, s.log())
	}

	s.startLazysnap(t)
	if got := s.managerPID(); got != manager {
		t.Fatalf("fuse manager pid %d after serve's restart, want the same %d", got, manager)
	}
	if got := sum(layers[1], "data/big"); got != "ok" {
		t.Fatalf("after serve's restart: read of an unread file: %s", got)
	}
	if got := sum(layers[0], "bin/busybox"); got != "ok" {
		t.Fatalf("after serve's restart: read of busybox: %s", got)
	}
	rep := s.status(t)
	if sn := rep.Snapshotter; sn == nil || sn.Restored != 2 || sn.Remounts != 0 || sn.RestoreFailures != 0 {
		t.Fatalf("after serve's restart the snapshotter reports %+v, want both layers restored as they were", rep.Snapshotter)
	}
	if fm := rep.FuseManager; fm == nil || fm.PID != manager || fm.Error != "" {
		t.Fatalf("status: fuse manager %+v, want pid %d", rep.FuseManager, manager)
	}
	if got := s.ctr(t, "run", "--rm", "--snapshotter", "lazysnap", ref, "after-serve", "/bin/cat", "/data/small"); got != "hello from a lazy layer\n" {
		t.Fatalf("new container after serve's restart printed %q", got)
	}

	// the fuse manager dies: serve starts another, which adopts the
	// mounts the fd keeper holds (TestManagerHandover)
	s.stopManager(t, syscall.SIGKILL)
	if got := s.ctr(t, "run", "--rm", "--snapshotter", "lazysnap", ref, "after-manager", "/bin/cat", "/data/small"); got != "hello from a lazy layer\n" {
		t.Fatalf("new container after the fuse manager was killed printed %q\n%s", got, s.log())
	}
	if got := s.managerPID(); got == 0 || got == manager {
		t.Fatalf("fuse manager pid %d after it was killed (was %d), want a new one", got, manager)
	}
	if sn := s.status(t).Snapshotter; sn == nil || sn.Remounts != 0 || sn.RestoreFailures != 0 {
		t.Fatalf("after the fuse manager was killed the snapshotter reports %+v, want the layers adopted, none remounted", sn)
	}
}

// TestManagerHandover: the fuse manager is stopped (SIGTERM), upgraded (a
// rebuilt binary put in place, then SIGTERM) and killed (SIGKILL) under a
// running container of a lazy image. Each time serve starts another
// manager, which adopts the mounts from the fd keeper, and the container
// goes on reading the right bytes of files nobody had read yet, through
// the mounts it started with: no layer is remounted.
func TestManagerHandover(t *testing.T) {
	s := startStack(t, "[fetch]\n  no_background = true\n")
	_, esgzDir := buildImages(t, "handover")
	layers := busyboxLayers(t, "handover")
	ref, _ := s.pushLayout(t, esgzDir, "handover", "esgz")
	if out := s.pull(t, ref); !strings.Contains(out, "2 of 2 layers lazy") {
		t.Fatalf("pull: %s\nlazysnap log:\n%s", out, s.log())
	}
	s.runSleeper(t, ref, "long")
	rebuild := func() {
		// a rebuilt binary replaces the one serve runs (a package upgrade
		// renames the new file into place)
		tmp := s.bin + ".new"
		if out, err := exec.Command("go", "build", "-o", tmp, ".").CombinedOutput(); err != nil {
			t.Fatalf("go build: %v\n%s", err, out)
		}
		if err := os.Rename(tmp, s.bin); err != nil {
			t.Fatal(err)
		}
	}
	for _, step := range []struct {
		name   string
		before func()
		sig    syscall.Signal
		layer  int
		path   string // a file not read before
	}{
		{name: "SIGTERM", sig: syscall.SIGTERM, layer: 1, path: "data/big"},
		{name: "upgrade", before: rebuild, sig: syscall.SIGTERM, layer: 1, path: "data/other"},
		{name: "SIGKILL", sig: syscall.SIGKILL, layer: 0, path: "bin/busybox"},
	} {
		manager := s.managerPID()
		if manager == 0 {
			t.Fatalf("%s: no fuse manager runs:\n%s", step.name, s.log())
		}
		if step.before != nil {
			step.before()
		}
		start := time.Now()
		s.stopManager(t, step.sig)
		// the read waits for the next manager, which serve starts
		if got := s.readSum(t, "long", "/"+step.path, sha256Of(t, layers[step.layer], step.path)); got != "ok" {
			t.Fatalf("%s: read of %s in the running container: %s\n%s", step.name, step.path, got, s.log())
		}
		t.Logf("%s: the container read %s %v after the signal", step.name, step.path, time.Since(start).Round(time.Millisecond))
		next := s.managerPID()
		if next == 0 || next == manager {
			t.Fatalf("%s: fuse manager pid %d, was %d: want a new one", step.name, next, manager)
		}
		if exe, _ := os.Readlink(fmt.Sprintf("/proc/%d/exe", next)); step.before != nil && exe != s.bin {
			t.Errorf("%s: the new manager runs %q, want the rebuilt %s", step.name, exe, s.bin)
		}
	}
	rep := s.status(t)
	if sn := rep.Snapshotter; sn == nil || sn.Remounts != 0 || sn.RestoreFailures != 0 {
		t.Fatalf("the snapshotter reports %+v, want the layers adopted, none remounted", rep.Snapshotter)
	}
	if n := len(rep.Images); n == 0 {
		t.Errorf("the last manager reports no image: it did not adopt the mounts\n%s", s.log())
	}
	if got := s.ctr(t, "run", "--rm", "--snapshotter", "lazysnap", ref, "after-handover", "/bin/cat", "/data/small"); got != "hello from a lazy layer\n" {
		t.Fatalf("new container after the handovers printed %q", got)
	}
}

// status runs `lazysnap status --json` against the stack.
func (s *stack) status(t *testing.T) ops.Report {
	t.Helper()
	out, err := exec.Command(s.bin, "status", "--config", filepath.Join(s.dir, "lazysnap.toml"), "--json").Output()
	if err != nil {
		t.Fatalf("lazysnap status: %v\n%s", err, out)
	}
	var rep ops.Report
	if err := json.Unmarshal(out, &rep); err != nil {
		t.Fatalf("lazysnap status: %v\n%s", err, out)
	}
	return rep
}

// TestContentCleanup: removing an image (containerd's garbage collection
// removes its snapshots, then calls the snapshotter's Cleanup) frees the
// file contents lazysnap fetched for its lazy layers, and only those: the
// layers of an image still in use keep theirs and stay readable.
func TestContentCleanup(t *testing.T) {
	s := startStack(t, "[fetch]\n  no_background = true\n")
	_, goneDir := buildImages(t, "cleanup-gone")
	_, keptDir := buildImages(t, "cleanup-kept")
	gone, _ := s.pushLayout(t, goneDir, "cleanup", "gone")
	kept, _ := s.pushLayout(t, keptDir, "cleanup", "kept")
	for _, ref := range []string{gone, kept} {
		if out := s.pull(t, ref); !strings.Contains(out, "2 of 2 layers lazy") {
			t.Fatalf("pull %s: %s", ref, out)
		}
		s.ctr(t, "run", "--rm", "--snapshotter", "lazysnap", ref, "read", "/bin/sh", "-c", "cat /data/other > /dev/null")
	}
	content := filepath.Join(s.dir, "root", "content")
	// a layer's content directory is named by its blob digest, then its
	// TOC digest
	dataContent := func(dir string) string {
		t.Helper()
		prefix := "sha256-" + layoutLayers(t, dir)[1].Digest.Encoded() + "."
		ents, _ := os.ReadDir(content)
		for _, e := range ents {
			if strings.HasPrefix(e.Name(), prefix) {
				return e.Name()
			}
		}
		t.Fatalf("no content directory %s* among %d", prefix, len(ents))
		return ""
	}
	goneData, keptData := dataContent(goneDir), dataContent(keptDir)
	for _, l := range []string{goneData, keptData} {
		if _, err := os.Stat(filepath.Join(content, l, "files")); err != nil {
			t.Fatalf("no fetched content for layer %s before removal: %v", l, err)
		}
	}

	s.ctr(t, "images", "rm", "--sync", gone)
	if _, err := os.Stat(filepath.Join(content, goneData)); !errors.Is(err, os.ErrNotExist) {
		ents, _ := os.ReadDir(content)
		t.Fatalf("content of the removed image's data layer: %v (content dir holds %d entries)\n%s", err, len(ents), s.log())
	}
	if _, err := os.Stat(filepath.Join(content, keptData, "files")); err != nil {
		t.Fatalf("content of the kept image's layer: %v", err)
	}
	if got := s.ctr(t, "run", "--rm", "--snapshotter", "lazysnap", kept, "kept", "/bin/cat", "/data/small"); got != "hello from a lazy layer\n" {
		t.Fatalf("kept image's container printed %q", got)
	}
}
