package benchmarks

// The filesystem the runs write to: each bench makes a fresh ext4 (with a
// journal, as a node's disk has) in a sparse file under the cache
// directory, loop-mounted, and puts every run's containerd and snapshotter
// roots there.
//
// Why: this machine's root filesystem is an ext4 without a journal, and
// such an ext4 does not reuse an inode freed in the last 60 s (360 s while
// its inode table block is dirty): each new inode's allocation steps over
// every recently freed one of its group (fs/ext4/ialloc.c,
// recently_deleted, which runs only when there is no journal). The walk
// image's 100,000-file layer, unpacked offline in 2.5-3.8 s, took 9-14 s
// (9-13 s of it in the kernel, 60% in recently_deleted) when written
// right after another 100,000 files were removed, as every run's roots
// are by the run's end: in the bench, containerd's walk pull and
// lazysnap's line-rate pull each took 21-31 s, depending on what the
// runs before them had removed and when. On the fresh journaled ext4 the
// same unpack takes 2.4 s, and 2.9 s right after a removal.

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// envFS chooses the runs' filesystem: "host" puts them in /tmp, as
// before; anything else (the default) makes a fresh ext4.
const envFS = "LAZYSNAP_BENCH_FS"

// runsFSGiB is the fresh filesystem's size: a sparse file mounted with
// discard, so that it takes on the host only what the live runs hold.
const runsFSGiB = 48

// runsFS returns the directory the runs' daemons make their directories
// in and a description of its filesystem for the report; a fresh ext4 is
// unmounted and its file removed at t's end.
func runsFS(t *testing.T, cfg benchConfig) (dir, disk string) {
	t.Helper()
	if os.Getenv(envFS) == "host" {
		return "/tmp", "the runs' roots in /tmp (" + envFS + "=host)"
	}
	if err := os.MkdirAll(cfg.cacheDir, 0o755); err != nil {
		t.Fatal(err)
	}
	img, err := os.CreateTemp(cfg.cacheDir, "runs-*.ext4")
	if err != nil {
		t.Fatal(err)
	}
	img.Close()
	t.Cleanup(func() { os.Remove(img.Name()) })
	run := func(name string, args ...string) {
		t.Helper()
		if out, err := exec.Command(name, args...).CombinedOutput(); err != nil {
			t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
		}
	}
	run("truncate", "-s", fmt.Sprintf("%dG", runsFSGiB), img.Name())
	// the inode tables and the journal written now, not by the kernel's
	// lazy init while the runs write
	run("mkfs.ext4", "-q", "-F", "-E", "lazy_itable_init=0,lazy_journal_init=0", img.Name())
	// short: the daemons' sockets are in it
	dir, err = os.MkdirTemp("/tmp", "lzfs-")
	if err != nil {
		t.Fatal(err)
	}
	run("mount", "-o", "loop,discard", img.Name(), dir)
	t.Cleanup(func() {
		if out, err := exec.Command("umount", dir).CombinedOutput(); err != nil {
			t.Logf("umount %s: %v\n%s (detaching it lazily)", dir, err, out)
			exec.Command("umount", "-l", dir).Run()
		}
		os.Remove(dir)
	})
	return dir, fmt.Sprintf("the runs' roots on a fresh ext4 with a journal (%d GiB sparse file under %s, loop-mounted with discard)",
		runsFSGiB, filepath.Clean(cfg.cacheDir))
}
