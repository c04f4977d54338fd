package logfile

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// spareFD is a descriptor of the test's own to stand for stdout/stderr.
func spareFD(t *testing.T) int {
	t.Helper()
	fd, err := syscall.Open(os.DevNull, syscall.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { syscall.Close(fd) })
	return fd
}

func writeFD(t *testing.T, fd int, s string) {
	t.Helper()
	if _, err := syscall.Write(fd, []byte(s)); err != nil {
		t.Fatal(err)
	}
}

func readOr(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if os.IsNotExist(err) {
		return "<none>"
	}
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestLogFileRotation(t *testing.T) {
	path := filepath.Join(t.TempDir(), "fusemanager.log")
	fd1, fd2 := spareFD(t), spareFD(t)
	lf := &File{Path: path, MaxBytes: 10, Keep: 2, FDs: []int{fd1, fd2}}
	if err := lf.Open(); err != nil {
		t.Fatal(err)
	}

	steps := []struct {
		name            string
		write           string
		remove          bool // an operator removed the file
		wantRotated     bool
		cur, gen1, gen2 string
	}{
		{name: "under the cap stays", write: "aaaa", cur: "aaaa", gen1: "<none>", gen2: "<none>"},
		{name: "over the cap rotates", write: "bbbbbbbb", wantRotated: true, cur: "", gen1: "aaaabbbbbbbb", gen2: "<none>"},
		{name: "second rotation shifts", write: "ccccccccccc", wantRotated: true, cur: "", gen1: "ccccccccccc", gen2: "aaaabbbbbbbb"},
		{name: "oldest is dropped past keep", write: "ddddddddddd", wantRotated: true, cur: "", gen1: "ddddddddddd", gen2: "ccccccccccc"},
		{name: "removed file is reopened", write: "eee", remove: true, wantRotated: true, cur: "", gen1: "ddddddddddd", gen2: "ccccccccccc"},
	}
	for _, st := range steps {
		t.Run(st.name, func(t *testing.T) {
			writeFD(t, fd1, st.write[:len(st.write)/2])
			writeFD(t, fd2, st.write[len(st.write)/2:])
			if st.remove {
				if err := os.Remove(path); err != nil {
					t.Fatal(err)
				}
			}
			rotated, err := lf.Rotate()
			if err != nil {
				t.Fatal(err)
			}
			if rotated != st.wantRotated {
				t.Errorf("rotated = %v, want %v", rotated, st.wantRotated)
			}
			for _, c := range []struct{ path, want string }{{path, st.cur}, {lf.Generation(1), st.gen1}, {lf.Generation(2), st.gen2}} {
				if got := readOr(t, c.path); got != c.want {
					t.Errorf("%s = %q, want %q", filepath.Base(c.path), got, c.want)
				}
			}
			if got := readOr(t, lf.Generation(3)); got != "<none>" {
				t.Errorf("kept a third old file: %q", got)
			}
		})
	}
	// after every rotation both descriptors write to the current file
	writeFD(t, fd1, "one ")
	writeFD(t, fd2, "two")
	if got := readOr(t, path); got != "one two" {
		t.Errorf("current file = %q, want both descriptors' writes", got)
	}
	if strings.Contains(readOr(t, lf.Generation(1)), "one") {
		t.Errorf("a rotated file still receives writes")
	}
}
