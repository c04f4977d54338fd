package record

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// DefaultPath is the PATH of a traced command when Options.Env is empty:
// the one containerd gives a container whose image sets none.
const DefaultPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// Options configures Trace.
type Options struct {
	// Env is the command's environment (PATH=DefaultPath and HOME=/root
	// if empty).
	Env []string
	// Stdout and Stderr receive the command's output (discarded if nil).
	Stdout, Stderr io.Writer
	// Timeout bounds the command (10 minutes if zero).
	Timeout time.Duration
}

// Trace runs argv chrooted into rootDir (an unpacked image) and returns the
// regular files of the image that it opened or executed, in first-access
// order, as clean relative names. argv[0] is an absolute path in the image
// or a name looked up in the image's PATH. The command must succeed.
//
// rootDir is bind-mounted onto itself for the duration, so that a fanotify
// mount mark sees exactly the accesses inside the image.
func Trace(ctx context.Context, rootDir string, argv []string, opts Options) ([]string, error) {
	if len(argv) == 0 {
		return nil, errors.New("record: no command")
	}
	root, err := filepath.Abs(rootDir)
	if err != nil {
		return nil, err
	}
	if root, err = filepath.EvalSymlinks(root); err != nil {
		return nil, err
	}
	env := opts.Env
	if len(env) == 0 {
		env = []string{"PATH=" + DefaultPath, "HOME=/root"}
	}
	bin, err := lookPathIn(root, argv[0], env)
	if err != nil {
		return nil, err
	}
	if opts.Timeout == 0 {
		opts.Timeout = 10 * time.Minute
	}

	if err := ensureDev(root); err != nil {
		return nil, err
	}
	if err := unix.Mount(root, root, "", unix.MS_BIND, ""); err != nil {
		return nil, fmt.Errorf("record: bind mount %s: %w", root, err)
	}
	defer unix.Unmount(root, unix.MNT_DETACH)
	fd, err := unix.FanotifyInit(unix.FAN_CLASS_NOTIF|unix.FAN_CLOEXEC|unix.FAN_NONBLOCK|unix.FAN_UNLIMITED_QUEUE,
		unix.O_RDONLY|unix.O_LARGEFILE|unix.O_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("record: fanotify_init: %w", err)
	}
	defer unix.Close(fd)
	mask := uint64(unix.FAN_OPEN | unix.FAN_OPEN_EXEC)
	err = unix.FanotifyMark(fd, unix.FAN_MARK_ADD|unix.FAN_MARK_MOUNT, mask, unix.AT_FDCWD, root)
	if errors.Is(err, unix.EINVAL) { // kernels before 5.0 have no FAN_OPEN_EXEC
		err = unix.FanotifyMark(fd, unix.FAN_MARK_ADD|unix.FAN_MARK_MOUNT, unix.FAN_OPEN, unix.AT_FDCWD, root)
	}
	if err != nil {
		return nil, fmt.Errorf("record: fanotify_mark %s: %w", root, err)
	}

	ev := &events{root: root, seen: map[string]bool{}}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); ev.loop(fd, stop) }()

	ctx, cancel := context.WithTimeout(ctx, opts.Timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, argv[1:]...)
	cmd.Args[0] = argv[0]
	cmd.Env = env
	cmd.Dir = "/"
	cmd.Stdout, cmd.Stderr = opts.Stdout, opts.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Chroot: root}
	runErr := cmd.Run()
	close(stop)
	wg.Wait()
	if runErr != nil {
		return nil, fmt.Errorf("record: %s: %w", strings.Join(argv, " "), runErr)
	}
	if ev.err != nil {
		return nil, ev.err
	}
	return ev.order, nil
}

// ensureDev creates the character devices every container has in
// root/dev, where missing (Unpack skips device nodes).
func ensureDev(root string) error {
	dev := filepath.Join(root, "dev")
	if err := os.MkdirAll(dev, 0o755); err != nil {
		return err
	}
	for _, d := range []struct {
		name         string
		major, minor uint32
	}{{"null", 1, 3}, {"zero", 1, 5}, {"full", 1, 7}, {"random", 1, 8}, {"urandom", 1, 9}} {
		p := filepath.Join(dev, d.name)
		if _, err := os.Lstat(p); err == nil {
			continue
		}
		if err := unix.Mknod(p, unix.S_IFCHR|0o666, int(unix.Mkdev(d.major, d.minor))); err != nil {
			return fmt.Errorf("record: mknod %s: %w", p, err)
		}
		if err := os.Chmod(p, 0o666); err != nil {
			return err
		}
	}
	return nil
}

// lookPathIn resolves a command name like a shell in the image would.
func lookPathIn(root, name string, env []string) (string, error) {
	if strings.Contains(name, "/") {
		if !path.IsAbs(name) {
			return "", fmt.Errorf("record: %q: give an absolute path in the image", name)
		}
		return name, nil
	}
	pathVar := "/usr/local/bin:/usr/bin:/bin"
	for _, kv := range env {
		if v, ok := strings.CutPrefix(kv, "PATH="); ok {
			pathVar = v
		}
	}
	for _, d := range filepath.SplitList(pathVar) {
		p := path.Join(d, name)
		if fi, err := os.Stat(filepath.Join(root, p)); err == nil && !fi.IsDir() && fi.Mode()&0o111 != 0 {
			return p, nil
		}
	}
	return "", fmt.Errorf("record: %q not found in the image's PATH %s", name, pathVar)
}

// events collects fanotify events into first-access order.
type events struct {
	root  string
	seen  map[string]bool
	order []string
	err   error
}

// fanotify_event_metadata: event_len u32, vers u8, reserved u8,
// metadata_len u16, mask u64, fd i32, pid i32.
const metadataLen = 24

// loop reads events until stop is closed and the queue is empty.
func (e *events) loop(fd int, stop <-chan struct{}) {
	buf := make([]byte, 64<<10)
	stopping := false
	for {
		n, err := unix.Read(fd, buf)
		switch {
		case errors.Is(err, unix.EAGAIN):
			if stopping {
				return
			}
			select {
			case <-stop:
				stopping = true // drain once more: events queued before exit
			default:
				pfd := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
				unix.Poll(pfd, 50)
			}
			continue
		case errors.Is(err, unix.EINTR):
			continue
		case err != nil:
			e.err = fmt.Errorf("record: reading fanotify events: %w", err)
			return
		}
		if err := e.parse(buf[:n]); err != nil && e.err == nil {
			e.err = err
		}
	}
}

func (e *events) parse(b []byte) error {
	var first error
	for len(b) >= metadataLen {
		evLen := binary.NativeEndian.Uint32(b[0:])
		vers := b[4]
		fd := int32(binary.NativeEndian.Uint32(b[16:]))
		mask := binary.NativeEndian.Uint64(b[8:])
		if evLen < metadataLen || int(evLen) > len(b) {
			return fmt.Errorf("record: bad fanotify event length %d", evLen)
		}
		if vers != unix.FANOTIFY_METADATA_VERSION {
			return fmt.Errorf("record: fanotify metadata version %d, want %d", vers, unix.FANOTIFY_METADATA_VERSION)
		}
		b = b[evLen:]
		if mask&unix.FAN_Q_OVERFLOW != 0 && first == nil {
			first = errors.New("record: fanotify queue overflow: accesses were lost")
		}
		if fd < 0 {
			continue
		}
		e.add(int(fd))
		unix.Close(int(fd))
	}
	return first
}

func (e *events) add(fd int) {
	var st unix.Stat_t
	if unix.Fstat(fd, &st) != nil || st.Mode&unix.S_IFMT != unix.S_IFREG {
		return
	}
	p, err := os.Readlink(fmt.Sprintf("/proc/self/fd/%d", fd))
	if err != nil || strings.HasSuffix(p, " (deleted)") {
		return
	}
	rel, ok := strings.CutPrefix(p, e.root+"/")
	if !ok || e.seen[rel] {
		return
	}
	e.seen[rel] = true
	e.order = append(e.order, rel)
}

// runtimeFiles are read from the image by containerd itself when it creates
// a container (ctr run and the CRI resolve the user's groups), before the
// workload runs.
const runtimeFiles = "etc/passwd etc/group"

// WithRuntimeFiles puts the files containerd reads from an image when it
// creates a container first, where root (the unpacked image) has them as
// regular files, followed by files without repeats.
func WithRuntimeFiles(root string, files []string) []string {
	var out []string
	seen := map[string]bool{}
	for _, f := range strings.Fields(runtimeFiles) {
		if fi, err := os.Lstat(filepath.Join(root, f)); err == nil && fi.Mode().IsRegular() {
			out = append(out, f)
			seen[f] = true
		}
	}
	for _, f := range files {
		if !seen[f] {
			out = append(out, f)
			seen[f] = true
		}
	}
	return out
}
