package containerd

import (
	"archive/tar"
	"bufio"
	"bytes"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/lazysnap/lazysnap/internal/testenv"
	"github.com/lazysnap/lazysnap/internal/testimage"
)

// stallingWriter passes writes on, but holds the first write after `after`
// bytes for `stall`: a reader of ctr's output that falls behind just as
// the container exits.
type stallingWriter struct {
	w       io.Writer
	after   int
	stall   time.Duration
	mu      sync.Mutex
	n       int
	stalled bool
}

func (s *stallingWriter) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.stalled && s.n >= s.after {
		s.stalled = true
		time.Sleep(s.stall)
	}
	s.n += len(p)
	return s.w.Write(p)
}

// captureImage imports an image of the host's static busybox and some
// data into c.
func captureImage(t *testing.T, c *Containerd, big []byte) string {
	t.Helper()
	bb := testenv.ReadFile(t, DefaultBusybox, "Debian busybox-static")
	var b bytes.Buffer
	tw := tar.NewWriter(&b)
	mt := time.Unix(1700000000, 0)
	add := func(name string, data []byte) {
		tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: 0o755, Size: int64(len(data)), ModTime: mt})
		tw.Write(data)
	}
	add("bin/busybox", bb)
	for _, applet := range []string{"sh", "cat", "sleep"} {
		tw.WriteHeader(&tar.Header{Typeflag: tar.TypeSymlink, Name: "bin/" + applet, Linkname: "busybox", Mode: 0o777, ModTime: mt})
	}
	add("data/big", big)
	add("data/empty", nil)
	tw.Close()
	const ref = "lazysnap.test/capture:v1"
	archive, err := testimage.OCIArchive(ref, b.Bytes())
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(c.Dir(), "capture.tar")
	if err := os.WriteFile(path, archive, 0o600); err != nil {
		t.Fatal(err)
	}
	if out, err := c.Ctr(t, "images", "import", path); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	return ref
}

// TestCtrCapture: Ctr returns a foreground container's whole output even
// when ctr's own output is read too late for ctr (which then drops what is
// still in its FIFOs), returns nothing for a command that printed
// nothing, keeps the exit status, and captures `tasks exec` in a container
// it ran.
func TestCtrCapture(t *testing.T) {
	c := Start(t, Options{})
	big := bytes.Repeat([]byte("0123456789abcdef"), 1<<16) // 1 MiB
	ref := captureImage(t, c, big)
	// ctr's output stalls 500 ms with 160 KiB to go: the container has
	// written them all into the pipes and FIFOs on the way, and exited
	c.ctrOutput = func(w io.Writer) io.Writer {
		return &stallingWriter{w: w, after: len(big) - 160<<10, stall: 500 * time.Millisecond}
	}
	for _, tc := range []struct {
		name    string
		args    []string
		want    string
		wantErr string // in the error; "" for none
	}{
		{"1 MiB", []string{"run", "--rm", ref, "big", "/bin/cat", "/data/big"}, string(big), ""},
		{"1 MiB twice", []string{"run", "--rm", ref, "big", "/bin/cat", "/data/big"}, string(big), ""},
		{"prints nothing", []string{"run", "--rm", ref, "empty", "/bin/cat", "/data/empty"}, "", ""},
		{"exit status, stderr", []string{"run", "--rm", ref, "exit3", "/bin/sh", "-c", "echo out; echo err >&2; exit 3"}, "out\nerr\n", "exit status 3"},
		{"flags with =, --", []string{"run", "--rm=true", "--snapshotter=overlayfs", "--env", "X=y", "--", ref, "env", "/bin/sh", "-c", `echo "$X"`}, "y\n", ""},
		{"relative command", []string{"run", "--rm", ref, "rel", "cat", "/data/empty"}, "", "needs an absolute path"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out, err := c.Ctr(t, tc.args...)
			if tc.wantErr == "" && err != nil || tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)) {
				t.Errorf("error %v, want %q", err, tc.wantErr)
			}
			if string(out) != tc.want {
				t.Errorf("output of %d bytes, want %d: %.200q", len(out), len(tc.want), out)
			}
		})
	}

	t.Run("tasks exec", func(t *testing.T) {
		if out, err := c.Ctr(t, "run", "-d", ref, "sleeper", "/bin/sleep", "600"); err != nil {
			t.Fatalf("%v\n%s", err, out)
		}
		t.Cleanup(func() {
			for _, args := range [][]string{{"tasks", "rm", "--force", "sleeper"}, {"containers", "rm", "sleeper"}} {
				if out, err := c.Ctr(t, args...); err != nil {
					t.Errorf("%v\n%s", err, out)
				}
			}
		})
		out, err := c.Ctr(t, "tasks", "exec", "--exec-id", "cat", "sleeper", "/bin/cat", "/data/big")
		if err != nil || !bytes.Equal(out, big) {
			t.Errorf("exec: %v, %d bytes of %d", err, len(out), len(big))
		}
	})

	// nothing left behind: the capture files are removed
	if names, err := os.ReadDir(c.capture.dir); err != nil || len(names) != 0 {
		t.Errorf("capture directory: %v %v", names, err)
	}
}

// TestCaptureFlags: the flags capture parses as taking no value are those
// the installed ctr's help shows without one, for `ctr run` and `ctr
// tasks exec`.
func TestCaptureFlags(t *testing.T) {
	ctrs := []string{DefaultCtr}
	if dir := os.Getenv(Containerd2Env); dir != "" {
		ctrs = append(ctrs, filepath.Join(dir, "ctr"))
	}
	for _, ctr := range ctrs {
		ctr = lookBinary(t, ctr)
		for _, tc := range []struct {
			name  string
			verb  []string
			bools map[string]bool
		}{
			{"run", []string{"run"}, runBoolFlags},
			{"tasks exec", []string{"tasks", "exec"}, execBoolFlags},
		} {
			t.Run(ctr+" "+tc.name, func(t *testing.T) {
				help, err := exec.Command(ctr, append(tc.verb, "--help")...).Output()
				if err != nil {
					t.Fatal(err)
				}
				flags := helpFlags(t, string(help))
				if len(flags) < 5 {
					t.Fatalf("%d flags in the help:\n%s", len(flags), help)
				}
				for name, takesValue := range flags {
					if tc.bools[name] == takesValue {
						t.Errorf("flag %s: takes a value %v, capture's table says %v", name, takesValue, !tc.bools[name])
					}
				}
			})
		}
	}
}

// helpFlags reads the OPTIONS of a ctr help text: flag name → whether it
// takes a value ("--rm  text", "--detach, -d  text", "--cwd value  text",
// "--config string, -c string  text").
func helpFlags(t *testing.T, help string) map[string]bool {
	flags := map[string]bool{}
	options := false
	sc := bufio.NewScanner(strings.NewReader(help))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		switch {
		case line == "OPTIONS:":
			options = true
			continue
		case strings.HasSuffix(line, ":"):
			options = false
		}
		if !options || !strings.HasPrefix(line, "-") {
			continue
		}
		spec, _, _ := strings.Cut(line, "  ") // the description is two spaces on
		for _, alt := range strings.Split(spec, ", ") {
			f := strings.Fields(alt)
			if len(f) == 0 || !strings.HasPrefix(f[0], "-") {
				continue // a value list: [ --uidmap ... ]
			}
			flags[strings.TrimLeft(f[0], "-")] = len(f) > 1
		}
	}
	return flags
}
