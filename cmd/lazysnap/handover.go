package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"syscall"
	"time"

	"github.com/coreos/go-systemd/v22/activation"

	"github.com/lazysnap/lazysnap/fusemanager"
	"github.com/lazysnap/lazysnap/remote"
)

// Handing the FUSE mounts from a fuse manager to its successor: the fd
// keeper (fusemanager.Keeper), or under systemd the unit's file
// descriptor store (fusemanager.FDStore), holds a duplicate of each
// mount's /dev/fuse descriptor with its remote.MountState; a starting manager takes them and
// adopts the mounts (remote.FS.Adopt), a stopping one (SIGTERM) leaves
// them mounted for it, and a killed one leaves them too: running
// containers' reads wait for the successor, which the kernel resends
// what the dead one had read and not answered (fs.Layer.Adopt).

// keeperSocketName is the keeper's socket in the root directory.
const keeperSocketName = "fdkeeper.sock"

// keeperPIDName is the file in the root directory holding its pid.
const keeperPIDName = "fdkeeper.pid"

// handoverDirName holds the mounts' open tables in the root directory.
const handoverDirName = "handover"

// runFDKeeper is `lazysnap fd-keeper`: the manager starts it.
func runFDKeeper(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("fd-keeper", flag.ContinueOnError)
	fs.SetOutput(stderr)
	sock := fs.String("socket", "", "the socket to listen on")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *sock == "" {
		return errUsage{"fd-keeper: --socket is required"}
	}
	fmt.Fprintf(stdout, "lazysnap fd-keeper holding descriptors on %s\n", *sock)
	// it outlives managers; it exits once it holds nothing and its
	// manager is gone, or, after SIGTERM, once it holds nothing
	return fusemanager.RunKeeper(ctx, *sock, filepath.Join(filepath.Dir(*sock), keeperPIDName), 2*time.Second)
}

// holder returns what holds the manager's mounts for its successor:
// systemd's file descriptor store when systemd runs the manager
// (NOTIFY_SOCKET; the unit sets FileDescriptorStoreMax=), else the root's
// fd keeper, started unless it answers.
func holder(ctx context.Context, root string) (fusemanager.Holder, error) {
	if sock := os.Getenv("NOTIFY_SOCKET"); sock != "" {
		return fusemanager.NewFDStore(sock, filepath.Join(root, handoverDirName), activation.Files(true))
	}
	return fusemanager.StartKeeper(ctx, filepath.Join(root, keeperSocketName), filepath.Join(root, "fdkeeper.log"))
}

// handoverFS is the manager's remote.FS with its mounts held for its
// successor (by the fd keeper or systemd).
type handoverFS struct {
	*remote.FS
	keeper fusemanager.Holder
	log    *slog.Logger
}

// Mount mounts, and has the keeper hold the mount: without it, a mount
// lives only as long as this process.
func (h *handoverFS) Mount(ctx context.Context, mountpoint string, labels map[string]string) error {
	if err := h.FS.Mount(ctx, mountpoint, labels); err != nil {
		return err
	}
	if err := h.hold(ctx, mountpoint); err != nil {
		h.log.WarnContext(ctx, "no successor can adopt a mount: it ends with this manager", "mountpoint", mountpoint, "error", err)
	}
	return nil
}

func (h *handoverFS) hold(ctx context.Context, mountpoint string) error {
	st, fd, err := h.FS.Handover(mountpoint)
	if err != nil {
		return err
	}
	defer fd.Close()
	b, err := json.Marshal(st)
	if err != nil {
		return err
	}
	return h.keeper.Put(ctx, mountpoint, b, fd)
}

func (h *handoverFS) Unmount(ctx context.Context, mountpoint string) error {
	err := h.FS.Unmount(ctx, mountpoint)
	if derr := h.keeper.Drop(ctx, mountpoint); derr != nil {
		h.log.WarnContext(ctx, "the unmounted layer's descriptor is still held", "mountpoint", mountpoint, "error", derr)
	}
	return err
}

// adoptAll serves the mounts the keeper holds; a mount it cannot serve
// is unmounted (detached), so that serve's check finds it gone and
// mounts it anew.
func (h *handoverFS) adoptAll(ctx context.Context) (adopted int, err error) {
	held, err := h.keeper.Take(ctx)
	if err != nil {
		return 0, err
	}
	var errs []error
	for _, m := range held {
		var st remote.MountState
		err := json.Unmarshal(m.State, &st)
		if err == nil && st.Mountpoint != m.Mountpoint {
			err = errors.New("state of another mountpoint")
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
		h.keeper.Drop(ctx, m.Mountpoint)
	}
	return adopted, errors.Join(errs...)
}
