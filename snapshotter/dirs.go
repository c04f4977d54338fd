package snapshotter

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/containerd/containerd/v2/core/mount"
	"github.com/containerd/containerd/v2/core/snapshots"
	"github.com/containerd/containerd/v2/core/snapshots/storage"
	"github.com/containerd/log"
	"github.com/moby/sys/mountinfo"
	"golang.org/x/sys/unix"
)

// Directory layout under root.
const (
	metadataFile = "metadata.db"
	snapshotsDir = "snapshots"
	fsDir        = "fs"
	workDir      = "work"
	tempPrefix   = "new-"
)

func (s *Snapshotter) snapshotPath(id string) string {
	return filepath.Join(s.root, snapshotsDir, id)
}

func (s *Snapshotter) fsPath(id string) string {
	return filepath.Join(s.root, snapshotsDir, id, fsDir)
}

func (s *Snapshotter) workPath(id string) string {
	return filepath.Join(s.root, snapshotsDir, id, workDir)
}

// newSnapshotDir makes a temporary snapshot directory with fs (and, for
// active snapshots, work) inside; the caller renames it to its ID.
func (s *Snapshotter) newSnapshotDir(kind snapshots.Kind) (string, error) {
	td, err := os.MkdirTemp(filepath.Join(s.root, snapshotsDir), tempPrefix)
	if err != nil {
		return "", err
	}
	if err := os.Mkdir(filepath.Join(td, fsDir), 0o755); err != nil {
		return td, err
	}
	if kind == snapshots.KindActive {
		if err := os.Mkdir(filepath.Join(td, workDir), 0o711); err != nil {
			return td, err
		}
	}
	return td, nil
}

// ensureDirs recreates a remote snapshot's directories if they are missing.
func (s *Snapshotter) ensureDirs(id string) error {
	if err := os.Mkdir(s.snapshotPath(id), 0o700); err != nil && !errors.Is(err, os.ErrExist) {
		return err
	}
	if err := os.Mkdir(s.fsPath(id), 0o755); err != nil && !errors.Is(err, os.ErrExist) {
		// A dead FUSE mount makes Mkdir fail with ENOTCONN; it is still a
		// mountpoint that remount can clear.
		if st, _ := mountState(s.fsPath(id)); st == mountNone {
			return err
		}
	}
	return nil
}

// mounts builds the mounts of an active snapshot or view: a bind mount when
// there is nothing to overlay, else an overlay whose lower dirs are the
// parents' fs directories, nearest parent first (a remote parent's fs is its
// FUSE mountpoint). An ID mapping adds uidmap= and gidmap= (see idMapping).
func (s *Snapshotter) mounts(snap storage.Snapshot, idm *idMapping) []mount.Mount {
	if len(snap.ParentIDs) == 0 {
		mode := "rw"
		if snap.Kind == snapshots.KindView {
			mode = "ro"
		}
		return []mount.Mount{{Type: "bind", Source: s.fsPath(snap.ID), Options: append(idm.options(), mode, "rbind")}}
	}
	if snap.Kind == snapshots.KindView && len(snap.ParentIDs) == 1 {
		return []mount.Mount{{Type: "bind", Source: s.fsPath(snap.ParentIDs[0]), Options: append(idm.options(), "ro", "rbind")}}
	}
	opts := append(idm.options(), s.overlayOpts...)
	if snap.Kind == snapshots.KindActive {
		opts = append(opts, "workdir="+s.workPath(snap.ID), "upperdir="+s.fsPath(snap.ID))
	}
	lower := make([]string, len(snap.ParentIDs))
	for i, id := range snap.ParentIDs {
		lower[i] = s.fsPath(id)
	}
	opts = append(opts, "lowerdir="+strings.Join(lower, ":"))
	return []mount.Mount{{Type: "overlay", Source: "overlay", Options: opts}}
}

type mountStatus int

const (
	mountNone mountStatus = iota // nothing mounted on the path
	mountLive                    // mounted and answering
	mountDead                    // mounted, but statfs fails (a FUSE server gone: ENOTCONN)
)

// mountState tells whether something is mounted exactly on mp.
func mountState(mp string) (mountStatus, error) {
	ms, err := mountinfo.GetMounts(mountinfo.SingleEntryFilter(mp))
	if err != nil {
		return mountNone, err
	}
	if len(ms) == 0 {
		return mountNone, nil
	}
	// statfs, not stat: the kernel answers stat of a FUSE root from its
	// attribute cache even after the server is gone; statfs always asks
	var st unix.Statfs_t
	if err := unix.Statfs(mp, &st); err != nil {
		return mountDead, nil
	}
	return mountLive, nil
}

// forceUnmount detaches everything mounted on mp, stacked mounts included.
func (s *Snapshotter) forceUnmount(ctx context.Context, mp string) error {
	for range 16 {
		if st, err := mountState(mp); err != nil {
			return err
		} else if st == mountNone {
			return nil
		}
		log.G(ctx).WithField("mountpoint", mp).Debug("lazysnap: detaching mount")
		if err := unix.Unmount(mp, unix.MNT_DETACH); err != nil {
			return fmt.Errorf("unmount %s: %w", mp, err)
		}
	}
	return fmt.Errorf("unmount %s: still mounted", mp)
}

// removeDir removes a snapshot directory that no snapshot uses. Whatever is
// still mounted below it is detached first, deepest first, so that the
// removal can never descend into a mounted layer; if that fails the
// directory is left for a later Cleanup.
func (s *Snapshotter) removeDir(ctx context.Context, dir string) error {
	ms, err := mountinfo.GetMounts(mountinfo.PrefixFilter(dir))
	if err != nil {
		return err
	}
	sort.Slice(ms, func(i, j int) bool { return len(ms[i].Mountpoint) > len(ms[j].Mountpoint) })
	for _, m := range ms {
		if err := s.forceUnmount(ctx, m.Mountpoint); err != nil {
			return fmt.Errorf("remove %s: %w", dir, err)
		}
	}
	return os.RemoveAll(dir)
}

// removeQuietly removes a snapshot this package created and must give up,
// logging failures (the directory is then left to Cleanup).
func (s *Snapshotter) removeQuietly(ctx context.Context, key string) {
	ctx = context.WithoutCancel(ctx)
	var id string
	err := s.ms.WithTransaction(ctx, true, func(ctx context.Context) (err error) {
		id, _, err = storage.Remove(ctx, key)
		return err
	})
	if err == nil {
		err = s.removeDir(ctx, s.snapshotPath(id))
	}
	if err != nil {
		log.G(ctx).WithError(err).WithField("key", key).Warn("lazysnap: cannot remove abandoned snapshot")
	}
}
