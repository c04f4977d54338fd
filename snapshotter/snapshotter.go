package snapshotter

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/containerd/containerd/v2/core/mount"
	"github.com/containerd/containerd/v2/core/snapshots"
	"github.com/containerd/containerd/v2/core/snapshots/storage"
	continuityfs "github.com/containerd/continuity/fs"
	"github.com/containerd/errdefs"
	"github.com/containerd/log"
)

// Opt configures New.
type Opt func(*config)

type config struct {
	mountTimeout   time.Duration
	unmountOnClose bool
	concurrency    int
	onMount        func(took time.Duration, lazy bool)
	noPull         bool
}

// WithOnMount sets a function called after each FileSystem.Mount that
// Prepare makes, with how long it took and whether the layer was then
// mounted lazily (false: it fell back to an ordinary pull). It must be
// cheap and safe for concurrent use.
func WithOnMount(fn func(took time.Duration, lazy bool)) Opt {
	return func(c *config) { c.onMount = fn }
}

// WithMountTimeout bounds each FileSystem.Mount that Prepare makes; a Mount
// that takes longer falls back to an ordinary pull (ReasonTimeout). Zero,
// the default, means no bound beyond the caller's context.
func WithMountTimeout(d time.Duration) Opt {
	return func(c *config) { c.mountTimeout = d }
}

// WithUnmountOnClose makes Close unmount every remote layer. By default
// Close leaves them mounted, for running containers and for the next New.
func WithUnmountOnClose() Opt {
	return func(c *config) { c.unmountOnClose = true }
}

// WithConcurrency sets how many FileSystem Mount (at restore) or Check calls
// run at once; the default is 8.
func WithConcurrency(n int) Opt {
	return func(c *config) {
		if n > 0 {
			c.concurrency = n
		}
	}
}

// Snapshotter is an overlayfs snapshotter that answers the remote-snapshot
// protocol with layers mounted by a FileSystem. It implements
// snapshots.Snapshotter and snapshots.Cleaner and is safe for concurrent use.
type Snapshotter struct {
	root        string
	ms          *storage.MetaStore
	fs          FileSystem
	cfg         config
	overlayOpts []string

	mu     sync.Mutex
	closed bool
	layers map[string]*layer // remote snapshots by ID
	stats  Stats

	fallbacks fallbackLog
}

// New opens (or creates) the snapshotter at root and mounts again every
// remote snapshot recorded there (see the package documentation on restart).
func New(ctx context.Context, root string, fs FileSystem, opts ...Opt) (*Snapshotter, error) {
	if fs == nil {
		return nil, fmt.Errorf("snapshotter: nil FileSystem: %w", errdefs.ErrInvalidArgument)
	}
	cfg := config{concurrency: 8}
	for _, o := range opts {
		o(&cfg)
	}
	if err := os.MkdirAll(filepath.Join(root, snapshotsDir), 0o700); err != nil {
		return nil, err
	}
	root, err := filepath.Abs(root)
	if err == nil {
		// Mountpoints are compared with /proc/self/mountinfo, which has
		// no symlinks.
		root, err = filepath.EvalSymlinks(root)
	}
	if err != nil {
		return nil, err
	}
	if strings.ContainsAny(root, ",:") {
		// Overlay mount options cannot carry these characters.
		return nil, fmt.Errorf("snapshotter root %q contains ',' or ':': %w", root, errdefs.ErrInvalidArgument)
	}
	ms, err := storage.NewMetaStore(filepath.Join(root, metadataFile))
	if err != nil {
		return nil, fmt.Errorf("open metadata: %w", err)
	}
	s := &Snapshotter{
		root:   root,
		ms:     ms,
		fs:     fs,
		cfg:    cfg,
		layers: map[string]*layer{},
		stats:  Stats{Fallbacks: map[Reason]uint64{}},
	}
	// index=off: layers are shared between overlays, and a FUSE lower dir
	// need not support file handles.
	if _, err := os.Stat("/sys/module/overlay/parameters/index"); err == nil {
		s.overlayOpts = []string{"index=off"}
	}
	if err := s.restore(ctx); err != nil {
		ms.Close()
		return nil, err
	}
	return s, nil
}

// Stat returns the info of the snapshot key.
func (s *Snapshotter) Stat(ctx context.Context, key string) (info snapshots.Info, err error) {
	err = s.ms.WithTransaction(ctx, false, func(ctx context.Context) error {
		_, info, _, err = storage.GetInfo(ctx, key)
		return err
	})
	if err != nil {
		return snapshots.Info{}, fmt.Errorf("stat %q: %w", key, err)
	}
	return info, nil
}

// Update updates the labels of a snapshot. A remote snapshot keeps its
// source labels (LabelRemote, the Stargz, CRI and TOC labels), which restore
// needs, whatever the update says.
func (s *Snapshotter) Update(ctx context.Context, info snapshots.Info, fieldpaths ...string) (out snapshots.Info, err error) {
	err = s.ms.WithTransaction(ctx, true, func(ctx context.Context) error {
		_, old, _, err := storage.GetInfo(ctx, info.Name)
		if err != nil {
			return err
		}
		if out, err = storage.UpdateInfo(ctx, info, fieldpaths...); err != nil {
			return err
		}
		if !isRemote(old.Labels) {
			return nil
		}
		changed := false
		for k, v := range old.Labels {
			if isSourceLabel(k) && out.Labels[k] != v {
				if out.Labels == nil {
					out.Labels = map[string]string{}
				}
				out.Labels[k], changed = v, true
			}
		}
		if changed {
			out, err = storage.UpdateInfo(ctx, out, "labels")
		}
		return err
	})
	if err != nil {
		return snapshots.Info{}, fmt.Errorf("update %q: %w", info.Name, err)
	}
	return out, nil
}

// Usage returns the disk a snapshot takes: for an active snapshot the size
// of its upper directory now, for a committed one the size recorded at
// commit, and for a remote one what the FileSystem reports if it is a
// Usager.
func (s *Snapshotter) Usage(ctx context.Context, key string) (snapshots.Usage, error) {
	var (
		id    string
		info  snapshots.Info
		usage snapshots.Usage
	)
	err := s.ms.WithTransaction(ctx, false, func(ctx context.Context) (err error) {
		id, info, usage, err = storage.GetInfo(ctx, key)
		return err
	})
	if err != nil {
		return snapshots.Usage{}, fmt.Errorf("usage %q: %w", key, err)
	}
	switch {
	case info.Kind == snapshots.KindActive:
		du, err := continuityfs.DiskUsage(ctx, s.fsPath(id))
		if err != nil {
			return snapshots.Usage{}, fmt.Errorf("usage %q: %w", key, err)
		}
		return snapshots.Usage(du), nil
	case isRemote(info.Labels):
		return s.remoteUsage(ctx, s.fsPath(id), usage), nil
	default:
		return usage, nil
	}
}

// Prepare creates an active snapshot. With LabelTargetSnapshotRef it first
// tries the remote-snapshot protocol: when the target is already committed,
// or the FileSystem mounts the layer (committed under the target name), it
// returns an error wrapping errdefs.ErrAlreadyExists and the caller skips
// the layer; otherwise it falls back and returns the active snapshot's
// mounts for an ordinary unpack.
func (s *Snapshotter) Prepare(ctx context.Context, key, parent string, opts ...snapshots.Opt) ([]mount.Mount, error) {
	base, idm, err := optsInfo(opts)
	if err != nil {
		return nil, fmt.Errorf("prepare %q: %w", key, err)
	}
	target := base.Labels[LabelTargetSnapshotRef]
	if target != "" {
		if exists, err := s.targetExists(ctx, target); exists {
			if err != nil {
				return nil, fmt.Errorf("prepare %q: %w", key, err)
			}
			return nil, fmt.Errorf("target snapshot %q: %w", target, errdefs.ErrAlreadyExists)
		}
	}
	snap, err := s.createSnapshot(ctx, snapshots.KindActive, key, parent, opts, idm)
	if err != nil {
		return nil, err
	}
	if target != "" {
		if done, err := s.prepareRemote(ctx, snap, key, parent, target, base.Labels); done {
			return nil, err
		}
	}
	return s.mounts(snap, s.forLowers(snap, idm)), nil
}

// optsInfo applies a call's options and reads the ID mapping they label.
func optsInfo(opts []snapshots.Opt) (snapshots.Info, *idMapping, error) {
	var info snapshots.Info
	for _, o := range opts {
		if err := o(&info); err != nil {
			return info, nil, fmt.Errorf("%v: %w", err, errdefs.ErrInvalidArgument)
		}
	}
	idm, err := idMappingOf(info.Labels)
	return info, idm, err
}

// View creates a read-only view of parent.
func (s *Snapshotter) View(ctx context.Context, key, parent string, opts ...snapshots.Opt) ([]mount.Mount, error) {
	_, idm, err := optsInfo(opts)
	if err != nil {
		return nil, fmt.Errorf("view %q: %w", key, err)
	}
	snap, err := s.createSnapshot(ctx, snapshots.KindView, key, parent, opts, idm)
	if err != nil {
		return nil, err
	}
	return s.mounts(snap, s.forLowers(snap, idm)), nil
}

// Mounts returns the mounts of an active snapshot or view, after making sure
// its remote parents are usable (errdefs.ErrUnavailable if not).
func (s *Snapshotter) Mounts(ctx context.Context, key string) ([]mount.Mount, error) {
	var (
		snap storage.Snapshot
		info snapshots.Info
	)
	err := s.ms.WithTransaction(ctx, false, func(ctx context.Context) (err error) {
		if snap, err = storage.GetSnapshot(ctx, key); err != nil {
			return err
		}
		_, info, _, err = storage.GetInfo(ctx, key)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("mounts %q: %w", key, err)
	}
	idm, err := idMappingOf(info.Labels)
	if err != nil {
		return nil, fmt.Errorf("mounts %q: %w", key, err)
	}
	if err := s.ensureAvailable(ctx, snap.ParentIDs); err != nil {
		return nil, fmt.Errorf("mounts %q: %w", key, err)
	}
	return s.mounts(snap, s.forLowers(snap, idm)), nil
}

// createSnapshot records an active snapshot or view, makes its directories
// and checks its remote parents; on error nothing is left behind. The root
// of its fs belongs to idm's root if it maps IDs, else to the owner of the
// nearest parent's root.
func (s *Snapshotter) createSnapshot(ctx context.Context, kind snapshots.Kind, key, parent string, opts []snapshots.Opt, idm *idMapping) (storage.Snapshot, error) {
	var snap storage.Snapshot
	err := s.ms.WithTransaction(ctx, true, func(ctx context.Context) (err error) {
		td, err := s.newSnapshotDir(kind)
		defer func() {
			if err != nil && td != "" {
				os.RemoveAll(td)
			}
		}()
		if err != nil {
			return fmt.Errorf("make snapshot directory: %w", err)
		}
		if snap, err = storage.CreateSnapshot(ctx, kind, key, parent, opts...); err != nil {
			return err
		}
		if err = os.Rename(td, s.snapshotPath(snap.ID)); err != nil {
			return fmt.Errorf("make snapshot directory: %w", err)
		}
		td = ""
		return nil
	})
	if err != nil {
		return storage.Snapshot{}, fmt.Errorf("create %q: %w", key, err)
	}
	if err := s.ensureAvailable(ctx, snap.ParentIDs); err != nil {
		s.removeQuietly(ctx, key)
		return storage.Snapshot{}, fmt.Errorf("create %q: %w", key, err)
	}
	if idm != nil || len(snap.ParentIDs) > 0 {
		err := s.chownRoot(snap, idm)
		if err != nil {
			s.removeQuietly(ctx, key)
			return storage.Snapshot{}, fmt.Errorf("create %q: %w", key, err)
		}
	}
	return snap, nil
}

// chownRoot gives the root of snap's fs its owner: the container's root
// (host IDs) under an ID mapping, as containerd's overlay snapshotter does
// (the lower dirs are idmapped, the upper dir is not), else the owner of
// the layer below.
func (s *Snapshotter) chownRoot(snap storage.Snapshot, idm *idMapping) error {
	if idm != nil {
		return os.Lchown(s.fsPath(snap.ID), idm.rootUID, idm.rootGID)
	}
	st, err := os.Stat(s.fsPath(snap.ParentIDs[0]))
	if err != nil {
		return err
	}
	sys := st.Sys().(*syscall.Stat_t)
	return os.Lchown(s.fsPath(snap.ID), int(sys.Uid), int(sys.Gid))
}

// Commit turns the active snapshot key into the committed snapshot name,
// recording the size of its upper directory.
func (s *Snapshotter) Commit(ctx context.Context, name, key string, opts ...snapshots.Opt) error {
	err := s.ms.WithTransaction(ctx, true, func(ctx context.Context) error {
		id, info, _, err := storage.GetInfo(ctx, key)
		if err != nil {
			return err
		}
		if info.Kind != snapshots.KindActive {
			return fmt.Errorf("%q is not an active snapshot: %w", key, errdefs.ErrFailedPrecondition)
		}
		du, err := continuityfs.DiskUsage(ctx, s.fsPath(id))
		if err != nil {
			return err
		}
		_, err = storage.CommitActive(ctx, key, name, snapshots.Usage(du), opts...)
		return err
	})
	if err != nil {
		return fmt.Errorf("commit %q as %q: %w", key, name, err)
	}
	return nil
}

// Remove removes a snapshot without children and its directory; a remote
// snapshot is unmounted through the FileSystem first. Failures after the
// record is gone are logged and leave the directory to Cleanup.
func (s *Snapshotter) Remove(ctx context.Context, key string) error {
	var (
		id     string
		remote bool
	)
	err := s.ms.WithTransaction(ctx, true, func(ctx context.Context) error {
		_, info, _, err := storage.GetInfo(ctx, key)
		if err != nil {
			return err
		}
		remote = isRemote(info.Labels)
		id, _, err = storage.Remove(ctx, key)
		return err
	})
	if err != nil {
		return fmt.Errorf("remove %q: %w", key, err)
	}
	lg := log.G(ctx).WithFields(log.Fields{"key": key, "id": id})
	if remote {
		s.mu.Lock()
		l := s.layers[id]
		delete(s.layers, id)
		s.mu.Unlock()
		// A layer that failed to restore is not mounted: nothing to undo.
		if l != nil && !l.mounted.Load() {
			lg.Debug("lazysnap: removed remote snapshot was not mounted")
		} else if err := s.fs.Unmount(ctx, s.fsPath(id)); err != nil {
			lg.WithError(err).Warn("lazysnap: unmount of removed remote snapshot failed")
		}
	}
	if err := s.removeDir(ctx, s.snapshotPath(id)); err != nil {
		lg.WithError(err).Warn("lazysnap: cannot remove snapshot directory; Cleanup will retry")
	}
	return nil
}

// Walk calls fn for every snapshot matching the filters.
func (s *Snapshotter) Walk(ctx context.Context, fn snapshots.WalkFunc, filters ...string) error {
	called := false
	err := s.ms.WithTransaction(ctx, false, func(ctx context.Context) error {
		return storage.WalkInfo(ctx, func(ctx context.Context, info snapshots.Info) error {
			called = true
			return fn(ctx, info)
		}, filters...)
	})
	if errdefs.IsNotFound(err) && !called {
		return nil // a new store has no snapshot bucket yet
	}
	return err
}

// Cleanup removes the directories under root/snapshots that no snapshot
// uses (left by failed removals, crashes or interrupted creations),
// detaching anything still mounted in them first.
func (s *Snapshotter) Cleanup(ctx context.Context) error {
	// The scan runs in a write transaction, the listing of the directory
	// too: a snapshot created meanwhile (its directory renamed into place
	// inside its own transaction) would otherwise be listed without being
	// in ids, and removed. IDs are never reused, so what is unused under
	// the lock stays unused.
	var unused []string
	err := s.ms.WithTransaction(ctx, true, func(ctx context.Context) error {
		ids, err := storage.IDMap(ctx)
		if err != nil && !errdefs.IsNotFound(err) { // NotFound: no snapshot yet
			return err
		}
		ents, err := os.ReadDir(filepath.Join(s.root, snapshotsDir))
		if err != nil {
			return err
		}
		for _, e := range ents {
			if _, used := ids[e.Name()]; !used {
				unused = append(unused, e.Name())
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("cleanup: %w", err)
	}
	var errs []error
	for _, name := range unused {
		dir := filepath.Join(s.root, snapshotsDir, name)
		if err := s.removeDir(ctx, dir); err != nil {
			errs = append(errs, err)
			continue
		}
		log.G(ctx).WithField("path", dir).Debug("lazysnap: removed unused snapshot directory")
	}
	if c, ok := s.fs.(Cleaner); ok {
		if err := c.Cleanup(ctx); err != nil {
			errs = append(errs, fmt.Errorf("remote layers: %w", err))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("cleanup: %w", err)
	}
	return nil
}

// Close closes the metadata store. Remote layers stay mounted unless
// WithUnmountOnClose was given (see the package documentation). Close is
// idempotent.
func (s *Snapshotter) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	ids := make([]string, 0, len(s.layers))
	for id := range s.layers {
		ids = append(ids, id)
	}
	s.mu.Unlock()

	var errs []error
	if s.cfg.unmountOnClose {
		ctx := context.Background()
		for _, id := range ids {
			if err := s.unmountLayer(ctx, s.fsPath(id)); err != nil {
				errs = append(errs, err)
			}
		}
	}
	if err := s.ms.Close(); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}
