package containerd

import (
	"debug/elf"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
)

// Why a container's output is captured through a file: ctr (1.6.20, and
// 2.x alike) closes its ends of the task's stdout and stderr FIFOs as soon
// as it has the exit status, before it has read what is still in them
// (client task.Delete: 1.6.20 calls io.Close before io.Wait, 2.x's
// io.Cancel closes the pipes). Output the shim or ctr's copy goroutine has
// not moved by then is gone, and ctr prints "" or a cut output with exit
// status 0. So Ctr runs a foreground `ctr run` or `ctr tasks exec` command
// under a wrapper shell that sends its stdout and stderr to a file on a
// bind mount, and returns that file's content: the command's writes are
// in the file before the command exits, whatever ctr does with its FIFOs.

// In the container: the host's capture directory, and the static busybox
// the wrapper runs as sh. Under /dev, the runtime's tmpfs, so that the
// mount points touch no snapshot.
const (
	captureDir   = "/dev/.lazysnap-stdio"
	captureShell = "/dev/.lazysnap-shell/sh" // busybox picks its applet by this name
)

// captureScript is the wrapper: $1 is the output file, the rest the
// command, run by exec (its exit status is the container's).
const captureScript = `o=$1; shift; exec >"$o" 2>&1; exec "$@"`

// DefaultBusybox is the static busybox the wrapper shell is (Debian
// busybox-static); the images need no shell of their own.
const DefaultBusybox = "/bin/busybox"

// ctr flags that take no value (the others take one), of `ctr run` and
// `ctr tasks exec` in 1.6 and 2.x (TestCaptureFlags checks them against
// the installed ctr's help).
var (
	runBoolFlags = map[string]bool{
		"rm": true, "null-io": true, "detach": true, "d": true, "cni": true, "sync-fs": true,
		"remap-labels": true, "privileged-without-host-devices": true, "runc-systemd-cgroup": true,
		"net-host": true, "privileged": true, "read-only": true, "tty": true, "t": true,
		"allow-new-privs": true, "seccomp": true, "rootfs": true, "no-pivot": true, "help": true, "h": true,
	}
	execBoolFlags = map[string]bool{"tty": true, "t": true, "detach": true, "d": true, "help": true, "h": true}
)

// capture holds the capture directory of one daemon and the containers
// run with it mounted. Safe for concurrent use.
type capture struct {
	dir     string // on the host, mode 0755; removed with the daemon's
	busybox string
	seq     atomic.Int64
	mu      sync.Mutex
	mounted map[string]bool // container IDs run with the capture mounts
	check   sync.Once
	err     error // busybox's check, valid after check
}

// newCapture makes the capture directory: its own, not under the daemon's
// 0700 directory, so that a user-namespaced container's root (an
// unprivileged host uid) can reach it.
func newCapture() (*capture, error) {
	dir, err := os.MkdirTemp("/tmp", "lsstdio-")
	if err != nil {
		return nil, err
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	return &capture{dir: dir, busybox: DefaultBusybox, mounted: map[string]bool{}}, nil
}

// shell checks once that busybox is a static executable: it runs in
// containers of any image.
func (c *capture) shell() error {
	c.check.Do(func() {
		f, err := elf.Open(c.busybox)
		if err != nil {
			c.err = fmt.Errorf("containerd testenv: capturing a container's output needs a static busybox (Debian busybox-static): %w", err)
			return
		}
		defer f.Close()
		for _, p := range f.Progs {
			if p.Type == elf.PT_INTERP {
				c.err = fmt.Errorf("containerd testenv: capturing a container's output needs a static busybox (Debian busybox-static): %s is dynamically linked", c.busybox)
				return
			}
		}
	})
	return c.err
}

// mountFlags are the `ctr run` flags that mount the capture directory and
// the shell.
func (c *capture) mountFlags() []string {
	return []string{
		"--mount", "type=bind,src=" + c.dir + ",dst=" + captureDir + ",options=rbind:rw",
		"--mount", "type=bind,src=" + c.busybox + ",dst=" + captureShell + ",options=rbind:ro",
	}
}

// invocation is a ctr command line split for capture.
type invocation struct {
	verb  []string          // "run", or "tasks", "exec"
	flags []string          // as given
	set   map[string]string // flag name (no dashes) → value ("true" for booleans)
	id    string            // the container
	pre   []string          // positional arguments before the id: run's image ref
	argv  []string          // the command; empty: the image's
}

// parseFlags splits args at the first argument that is not a flag (or
// after "--"); bools names the flags that take no value.
func parseFlags(args []string, bools map[string]bool) (flags []string, set map[string]string, rest []string, err error) {
	set = map[string]string{}
	for i := 0; i < len(args); i++ {
		a := args[i]
		if a == "--" {
			return flags, set, args[i+1:], nil
		}
		if !strings.HasPrefix(a, "-") || a == "-" {
			return flags, set, args[i:], nil
		}
		name := strings.TrimLeft(a, "-")
		if n, v, ok := strings.Cut(name, "="); ok {
			set[n] = v
			flags = append(flags, a)
			continue
		}
		if bools[name] {
			set[name] = "true"
			flags = append(flags, a)
			continue
		}
		if i+1 == len(args) {
			return nil, nil, nil, fmt.Errorf("containerd testenv: ctr flag %s has no value", a)
		}
		set[name] = args[i+1]
		flags = append(flags, a, args[i+1])
		i++
	}
	return flags, set, nil, nil
}

// parseInvocation recognizes `ctr run` and `ctr tasks exec` (and its
// aliases) command lines; ok is false for any other.
func parseInvocation(args []string) (inv invocation, ok bool, err error) {
	var bools map[string]bool
	var npre int
	switch {
	case len(args) >= 1 && args[0] == "run":
		inv.verb, bools, npre = args[:1], runBoolFlags, 1
	case len(args) >= 2 && (args[0] == "tasks" || args[0] == "task" || args[0] == "t") && args[1] == "exec":
		inv.verb, bools = args[:2], execBoolFlags
	default:
		return inv, false, nil
	}
	var rest []string
	if inv.flags, inv.set, rest, err = parseFlags(args[len(inv.verb):], bools); err != nil {
		return inv, false, err
	}
	if len(rest) < npre+1 {
		return inv, false, nil // ctr says what is missing
	}
	inv.pre, inv.id, inv.argv = rest[:npre], rest[npre], rest[npre+1:]
	return inv, true, nil
}

// foreground reports whether ctr waits for the command and copies its
// output: no detach, no terminal, no IO of the caller's choosing.
func (inv invocation) foreground() bool {
	for _, f := range []string{"detach", "d", "tty", "t", "null-io", "log-uri", "config", "c"} {
		if v, ok := inv.set[f]; ok && v != "false" {
			return false
		}
	}
	return true
}

// args rebuilds the command line, with extra flags and the command
// wrapped in wrap.
func (inv invocation) args(extra, wrap []string) []string {
	out := append(append(append([]string{}, inv.verb...), inv.flags...), extra...)
	out = append(append(out, inv.pre...), inv.id)
	return append(append(out, wrap...), inv.argv...)
}

// ctrCaptured runs ctr with args: a foreground `ctr run` or `ctr tasks
// exec` (in a container run through here) with its output captured; any
// other command as it is.
func (c *Containerd) ctrCaptured(t testing.TB, args []string) ([]byte, error) {
	t.Helper()
	inv, ok, err := parseInvocation(args)
	if err != nil {
		return nil, err
	}
	if !ok || inv.set["help"] != "" || inv.set["h"] != "" {
		return c.run(t, c.ctr, args)
	}
	run := inv.verb[0] == "run"
	var extra []string
	if run {
		if err := c.capture.shell(); err != nil {
			return nil, err
		}
		extra = c.capture.mountFlags()
		c.capture.mu.Lock()
		c.capture.mounted[inv.id] = true
		c.capture.mu.Unlock()
	} else {
		c.capture.mu.Lock()
		mounted := c.capture.mounted[inv.id]
		c.capture.mu.Unlock()
		if !mounted { // not run through here: no capture mounts
			return c.run(t, c.ctr, args)
		}
	}
	if !inv.foreground() || len(inv.argv) == 0 {
		// nothing to capture, or the image's own command, which a
		// wrapper would have to know
		return c.run(t, c.ctr, inv.args(extra, nil))
	}
	if !strings.Contains(inv.argv[0], "/") {
		// busybox's sh would run its own applet of that name
		return nil, fmt.Errorf("containerd testenv: ctr %s: the command %q needs an absolute path (its output is captured by a busybox shell)", strings.Join(inv.verb, " "), inv.argv[0])
	}
	name := fmt.Sprintf("out-%d", c.capture.seq.Add(1))
	host := filepath.Join(c.capture.dir, name)
	// created here, writable by any uid: a user-namespaced container's
	// root is an unprivileged host uid
	if err := os.WriteFile(host, nil, 0o666); err != nil {
		return nil, err
	}
	if err := os.Chmod(host, 0o666); err != nil {
		return nil, err
	}
	defer os.Remove(host)
	wrap := []string{captureShell, "-c", captureScript, "sh", captureDir + "/" + name}
	out, err := c.run(t, c.ctr, inv.args(extra, wrap))
	if run && inv.set["rm"] != "" && inv.set["rm"] != "false" {
		c.capture.mu.Lock()
		delete(c.capture.mounted, inv.id)
		c.capture.mu.Unlock()
	}
	captured, rerr := os.ReadFile(host)
	if rerr != nil && !errors.Is(rerr, fs.ErrNotExist) {
		err = errors.Join(err, rerr)
	}
	// ctr's own output (its errors) after the command's
	return append(captured, out...), err
}
