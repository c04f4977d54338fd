package fusemanager

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"syscall"

	"github.com/coreos/go-systemd/v22/activation"
	"github.com/lazysnap/lazysnap/remote"
)

// Handing the FUSE mounts from a fuse manager to its successor: a Holder
// (the fd keeper, or under systemd the unit's file descriptor store) holds
// a duplicate of each mount's /dev/fuse descriptor with its
// remote.MountState; a starting manager takes them and adopts the mounts
// (remote.FS.Adopt), a stopping one (SIGTERM) leaves them mounted for it,
// and a killed one leaves them too: running containers' reads wait for the
// successor, to which the kernel resends what the dead one had read and
// not answered (fs.Adopt).

// The handover's files in the manager's root directory.
const (
	KeeperSocketName = "fdkeeper.sock" // the fd keeper's socket
	KeeperPIDName    = "fdkeeper.pid"  // its pid (RunKeeper's pidFile)
	KeeperLogName    = "fdkeeper.log"  // its output
	HandoverDirName  = "handover"      // the mounts' open tables (remote.Options.Handover), FDStore's states
)

// OpenHolder returns what holds the mounts of the manager whose root
// directory is root for its successor: systemd's file descriptor store
// when systemd runs the manager (NOTIFY_SOCKET; the unit sets
// FileDescriptorStoreMax=), with the descriptors it passed, else the
// root's fd keeper, started unless it answers.
func OpenHolder(ctx context.Context, root string) (Holder, error) {
	if sock := os.Getenv("NOTIFY_SOCKET"); sock != "" {
		return NewFDStore(sock, filepath.Join(root, HandoverDirName), activation.Files(true))
	}
	return StartKeeper(ctx, filepath.Join(root, KeeperSocketName), filepath.Join(root, KeeperLogName))
}

// HandoverFS is a manager's remote.FS with its mounts held for its
// successor by Holder.
type HandoverFS struct {
	*remote.FS
	Holder Holder
	// OnError, if set, is told of what goes wrong without failing the
	// call: a mount that is not held (no successor can adopt it: it
	// ends with this manager), an unmounted layer's descriptor still
	// held.
	OnError func(msg, mountpoint string, err error)
}

func (h *HandoverFS) report(msg, mountpoint string, err error) {
	if h.OnError != nil {
		h.OnError(msg, mountpoint, err)
	}
}

// Mount mounts, and has the Holder hold the mount: without it, a mount
// lives only as long as this process.
func (h *HandoverFS) Mount(ctx context.Context, mountpoint string, labels map[string]string) error {
	if err := h.FS.Mount(ctx, mountpoint, labels); err != nil {
		return err
	}
	if err := h.hold(ctx, mountpoint); err != nil {
		h.report("no successor can adopt a mount: it ends with this manager", mountpoint, err)
	}
	return nil
}

func (h *HandoverFS) hold(ctx context.Context, mountpoint string) error {
	st, fd, err := h.FS.Handover(mountpoint)
	if err != nil {
		return err
	}
	defer fd.Close()
	b, err := json.Marshal(st)
	if err != nil {
		return err
	}
	return h.Holder.Put(ctx, mountpoint, b, fd)
}

// Unmount unmounts, and has the Holder let go of the mount.
func (h *HandoverFS) Unmount(ctx context.Context, mountpoint string) error {
	err := h.FS.Unmount(ctx, mountpoint)
	if derr := h.Holder.Drop(ctx, mountpoint); derr != nil {
		h.report("the unmounted layer's descriptor is still held", mountpoint, derr)
	}
	return err
}

// AdoptAll serves the mounts the Holder holds from a predecessor; a mount
// it cannot serve is unmounted (detached) and dropped, so that serve's
// check finds it gone and mounts it anew.
func (h *HandoverFS) AdoptAll(ctx context.Context) (adopted int, err error) {
	held, err := h.Holder.Take(ctx)
	if err != nil {
		return 0, err
	}
	var errs []error
	for _, m := range held {
		var st remote.MountState
		err := json.Unmarshal(m.State, &st)
		if err == nil && st.Mountpoint != m.Mountpoint {
			err = fmt.Errorf("%w: the state of %s", ErrHandover, st.Mountpoint)
		}
		if err == nil {
			err = h.FS.Adopt(ctx, st, m.FD)
		}
		m.FD.Close()
		if err == nil {
			adopted++
			continue
		}
		errs = append(errs, fmt.Errorf("adopting %s: %w", m.Mountpoint, err))
		if uerr := syscall.Unmount(m.Mountpoint, syscall.MNT_DETACH); uerr != nil && !errors.Is(uerr, syscall.EINVAL) {
			errs = append(errs, uerr)
		}
		h.Holder.Drop(ctx, m.Mountpoint)
	}
	return adopted, errors.Join(errs...)
}

// ErrHandover is AdoptAll's error for a held mount whose state is not one
// it can adopt.
var ErrHandover = errors.New("fusemanager: bad handover state")
