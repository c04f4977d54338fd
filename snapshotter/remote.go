package snapshotter

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"sync"
	"sync/atomic"
	"time"

	"github.com/containerd/containerd/v2/core/snapshots"
	"github.com/containerd/containerd/v2/core/snapshots/storage"
	"github.com/containerd/errdefs"
	"github.com/containerd/log"
	"golang.org/x/sync/errgroup"
)

// FileSystem mounts remote layers. Implemented elsewhere (cmd wiring joins
// fetcher+estargz+fs); tests use a fake.
//
// Mount mounts the layer that labels describe (see ParseLayerSource) on the
// existing empty directory mountpoint, read-only. When it fails it must leave
// mountpoint unmounted; wrapping a Reason in the error (for example
// fmt.Errorf("no TOC: %w", ReasonNotLazy)) tells the snapshotter how to count
// the fallback. Check reports whether the layer mounted at mountpoint can
// serve reads; Unmount undoes Mount. All three may be called concurrently
// for different mountpoints.
//
// ctx is the caller's: for Prepare it is the client's request, cancelled
// (or bounded by WithMountTimeout) once Prepare returns, so nothing that
// outlives Mount (the FUSE server, prefetch, background fetch) may use it.
type FileSystem interface {
	Mount(ctx context.Context, mountpoint string, labels map[string]string) error
	Check(ctx context.Context, mountpoint string, labels map[string]string) error
	Unmount(ctx context.Context, mountpoint string) error
}

// Usager is an optional interface of a FileSystem: Usage reports the local
// disk a remote layer takes (its chunk cache, say). Without it a remote
// snapshot's usage is the zero value recorded when it was committed.
type Usager interface {
	Usage(ctx context.Context, mountpoint string) (snapshots.Usage, error)
}

// Cleaner is an optional interface of a FileSystem: Cleanup frees the
// local data (fetched contents, say) of layers that are not mounted now.
// Snapshotter.Cleanup, which containerd calls after garbage collection,
// calls it once the unused snapshot directories are gone.
type Cleaner interface {
	Cleanup(ctx context.Context) error
}

// Reason says why a layer was not mounted remotely but pulled the ordinary
// way; it keys Stats.Fallbacks. A Reason is also an error, so that a
// FileSystem can wrap one to classify its failure; FileSystems may define
// their own Reasons.
type Reason string

// Error returns the reason itself.
func (r Reason) Error() string { return string(r) }

// Fallback reasons.
const (
	// ReasonMissingLabels: the target label came without an image
	// reference or layer digest label (a client that does not append
	// source labels, such as plain `ctr image pull`).
	ReasonMissingLabels Reason = "missing-labels"
	// ReasonInvalidLabels: a source label was malformed.
	ReasonInvalidLabels Reason = "invalid-labels"
	// ReasonNotLazy: the layer cannot be lazily loaded (not eStargz).
	ReasonNotLazy Reason = "not-lazy"
	// ReasonVerification: the layer failed verification (TOC digest).
	ReasonVerification Reason = "verification"
	// ReasonTimeout: Mount took longer than WithMountTimeout allows, or
	// the FileSystem says the registry timed out.
	ReasonTimeout Reason = "timeout"
	// ReasonMountError: Mount failed for any other reason.
	ReasonMountError Reason = "mount-error"
	// ReasonCommitError: the layer was mounted but committing it failed.
	ReasonCommitError Reason = "commit-error"
)

// Stats counts what the snapshotter did since New.
type Stats struct {
	// RemoteMounts counts Prepares answered with a remote snapshot.
	RemoteMounts uint64
	// Pulls counts layers that were not lazy and that the Puller pulled
	// (Fallbacks counts them under ReasonPullFailed when that failed);
	// PulledBytes is their compressed bytes.
	Pulls, PulledBytes uint64
	// Fallbacks counts Prepares with the target label that returned an
	// ordinary active snapshot, by Reason.
	Fallbacks map[Reason]uint64
	// Restored counts remote snapshots that New mounted again or found
	// still mounted and healthy.
	Restored uint64
	// RestoreFailures counts remote snapshots New could not mount.
	RestoreFailures uint64
	// Remounts counts remote layers mounted again after New failed to
	// restore them or after their mount died.
	Remounts uint64
	// Unavailable is the number of remote snapshots not mounted now.
	Unavailable int
}

// layer is a remote snapshot known to this Snapshotter. mu serializes
// Check and remount of the layer; mounted says whether it is mounted.
type layer struct {
	name    string
	mu      sync.Mutex
	mounted atomic.Bool
}

func (s *Snapshotter) addLayer(id, name string, mounted bool) {
	l := &layer{name: name}
	l.mounted.Store(mounted)
	s.mu.Lock()
	defer s.mu.Unlock()
	s.layers[id] = l
}

func (s *Snapshotter) layerOf(id string) *layer {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.layers[id]
}

func (s *Snapshotter) count(fn func(st *Stats)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	fn(&s.stats)
}

// Stats returns a snapshot of the counters.
func (s *Snapshotter) Stats() Stats {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := s.stats
	st.Fallbacks = maps.Clone(s.stats.Fallbacks)
	for _, l := range s.layers {
		if !l.mounted.Load() {
			st.Unavailable++
		}
	}
	return st
}

// Fallbacks lists the most recent layers that were not mounted remotely
// (one per image reference and layer digest, oldest first, at most 256),
// with the step's Reason: invalid or missing labels as well as failed
// Mounts. A layer that mounts remotely later is dropped from the list.
func (s *Snapshotter) Fallbacks() []Fallback { return s.fallbacks.list() }

// reasonOf classifies a failed Mount.
func reasonOf(mctx context.Context, err error) Reason {
	var r Reason
	switch {
	case errors.As(err, &r):
		return r
	case errors.Is(mctx.Err(), context.DeadlineExceeded):
		return ReasonTimeout
	default:
		return ReasonMountError
	}
}

// prepareRemote tries to answer Prepare(key) with the remote snapshot target.
// It returns done=false when the caller should hand out the active snapshot
// for an ordinary unpack (the fallback, already logged and counted), and
// done=true with the error Prepare must return otherwise: ErrAlreadyExists
// on success.
func (s *Snapshotter) prepareRemote(ctx context.Context, snap storage.Snapshot, key, parent, target string, labels map[string]string) (bool, error) {
	lg := log.G(ctx).WithFields(log.Fields{"key": key, "target": target})
	ref, dg := sourceOf(labels)
	fallback := func(r Reason, err error) (bool, error) {
		s.count(func(st *Stats) { st.Fallbacks[r]++ })
		s.fallbacks.add(Fallback{Ref: ref, Digest: dg, Target: target, Reason: r, Err: err.Error(), Time: time.Now()})
		e := lg.WithError(err).WithField("reason", string(r))
		if r == ReasonMissingLabels {
			// The client chose an ordinary pull.
			e.Info("lazysnap: no source labels; ordinary pull")
		} else {
			e.Warn("lazysnap: layer not mounted remotely; falling back to ordinary pull")
		}
		return false, nil
	}
	src, err := ParseLayerSource(labels)
	if err != nil {
		return fallback(reasonOf(ctx, err), err)
	}
	lg = lg.WithFields(log.Fields{"ref": src.Ref, "digest": src.Digest.String()})
	mp := s.fsPath(snap.ID)

	mctx, cancel := ctx, context.CancelFunc(func() {})
	if s.cfg.mountTimeout > 0 {
		mctx, cancel = context.WithTimeout(ctx, s.cfg.mountTimeout)
	}
	start := time.Now()
	err = s.fs.Mount(mctx, mp, maps.Clone(labels))
	cancel()
	if s.cfg.onMount != nil {
		s.cfg.onMount(time.Since(start), err == nil)
	}
	if err != nil {
		if uerr := s.forceUnmount(ctx, mp); uerr != nil {
			// The directory cannot serve as an upper dir; give up on it.
			s.removeQuietly(ctx, key)
			return true, fmt.Errorf("remote mount of %q failed (%v) and %s stays mounted: %w", target, err, mp, uerr)
		}
		if ctx.Err() != nil {
			// The caller is gone: nobody will unpack into the snapshot.
			s.removeQuietly(ctx, key)
			return true, fmt.Errorf("prepare %q: %w", key, ctx.Err())
		}
		r := reasonOf(mctx, err)
		if p := s.puller(); p != nil && r == ReasonNotLazy {
			return s.pullLayer(ctx, p, snap, key, parent, target, labels, err)
		}
		return fallback(r, err)
	}

	clabels := maps.Clone(labels)
	clabels[LabelRemote] = RemoteValue
	usage := s.remoteUsage(ctx, mp, snapshots.Usage{})
	err = s.ms.WithTransaction(ctx, true, func(ctx context.Context) error {
		if _, err := storage.CommitActive(ctx, key, target, usage, snapshots.WithLabels(clabels)); err != nil {
			return err
		}
		// Known before any Remove of the target can run.
		s.addLayer(snap.ID, target, true)
		return nil
	})
	if err != nil {
		s.mu.Lock()
		delete(s.layers, snap.ID)
		s.mu.Unlock()
		if uerr := s.unmountLayer(ctx, mp); uerr != nil {
			s.removeQuietly(ctx, key)
			return true, fmt.Errorf("commit remote snapshot %q: %w (and unmount: %v)", target, err, uerr)
		}
		switch {
		case errdefs.IsAlreadyExists(err):
			// Another Prepare committed the same target first.
			s.removeQuietly(ctx, key)
			return true, fmt.Errorf("target snapshot %q: %w", target, errdefs.ErrAlreadyExists)
		case errdefs.IsNotFound(err):
			// key was removed meanwhile: nothing to fall back on.
			return true, fmt.Errorf("commit remote snapshot %q: %w", target, err)
		}
		return fallback(ReasonCommitError, err)
	}
	s.count(func(st *Stats) { st.RemoteMounts++ })
	s.fallbacks.mounted(ref, dg)
	lg.WithField("mountpoint", mp).Info("lazysnap: layer mounted remotely")
	return true, fmt.Errorf("target snapshot %q: %w", target, errdefs.ErrAlreadyExists)
}

// targetExists reports whether target is a committed snapshot. A remote
// target that is not mounted (failed restore) is mounted again first, and an
// error says it cannot be: an image whose layer cannot serve is not
// reported as pulled.
func (s *Snapshotter) targetExists(ctx context.Context, target string) (bool, error) {
	var (
		id   string
		info snapshots.Info
	)
	err := s.ms.WithTransaction(ctx, false, func(ctx context.Context) (err error) {
		id, info, _, err = storage.GetInfo(ctx, target)
		return err
	})
	if err != nil || info.Kind != snapshots.KindCommitted {
		return false, nil
	}
	if l := s.layerOf(id); l != nil && !l.mounted.Load() {
		return true, s.checkLayer(ctx, id, l)
	}
	return true, nil
}

// remoteUsage asks the FileSystem for a remote layer's usage, else returns def.
func (s *Snapshotter) remoteUsage(ctx context.Context, mp string, def snapshots.Usage) snapshots.Usage {
	u, ok := s.fs.(Usager)
	if !ok {
		return def
	}
	usage, err := u.Usage(ctx, mp)
	if err != nil {
		log.G(ctx).WithError(err).WithField("mountpoint", mp).Debug("lazysnap: remote layer usage unknown")
		return def
	}
	return usage
}

// unmountLayer unmounts a remote layer through the FileSystem and makes sure
// nothing stays mounted on mp.
func (s *Snapshotter) unmountLayer(ctx context.Context, mp string) error {
	ferr := s.fs.Unmount(ctx, mp)
	if err := s.forceUnmount(ctx, mp); err != nil {
		return errors.Join(ferr, err)
	}
	return nil
}

// restore mounts every remote snapshot again (New). A live mount that the
// FileSystem vouches for (Check) is kept, so that a FileSystem whose mounts
// outlive the process (FUSE served elsewhere) is not disturbed; any other
// mount on the mountpoint, dead or unknown, is detached and replaced. A
// layer that cannot be mounted is logged, counted and remembered: children
// that need it mount it again first (ensureAvailable).
func (s *Snapshotter) restore(ctx context.Context) error {
	type remote struct {
		id   string
		info snapshots.Info
	}
	var todo []remote
	err := s.ms.WithTransaction(ctx, false, func(ctx context.Context) error {
		return storage.WalkInfo(ctx, func(ctx context.Context, info snapshots.Info) error {
			if info.Kind != snapshots.KindCommitted || !isRemote(info.Labels) {
				return nil
			}
			id, _, _, err := storage.GetInfo(ctx, info.Name)
			if err != nil {
				return err
			}
			todo = append(todo, remote{id, info})
			return nil
		})
	})
	if err != nil && !errdefs.IsNotFound(err) { // NotFound: a new, empty store
		return fmt.Errorf("list remote snapshots: %w", err)
	}
	g := new(errgroup.Group)
	g.SetLimit(s.cfg.concurrency)
	for _, r := range todo {
		g.Go(func() error {
			s.restoreLayer(ctx, r.id, r.info)
			return nil
		})
	}
	return g.Wait()
}

func (s *Snapshotter) restoreLayer(ctx context.Context, id string, info snapshots.Info) {
	mp := s.fsPath(id)
	lg := log.G(ctx).WithFields(log.Fields{"snapshot": info.Name, "mountpoint": mp})
	if err := s.ensureDirs(id); err != nil {
		s.addLayer(id, info.Name, false)
		s.count(func(st *Stats) { st.RestoreFailures++ })
		lg.WithError(err).Error("lazysnap: cannot restore remote snapshot")
		return
	}
	if state, _ := mountState(mp); state == mountLive {
		err := s.fs.Check(ctx, mp, info.Labels)
		if err == nil {
			s.addLayer(id, info.Name, true)
			s.count(func(st *Stats) { st.Restored++ })
			lg.Info("lazysnap: remote snapshot still mounted; kept")
			return
		}
		lg.WithError(err).Info("lazysnap: mount left on remote snapshot fails Check; replacing it")
	}
	if err := s.remount(ctx, mp, info.Labels); err != nil {
		s.addLayer(id, info.Name, false)
		s.count(func(st *Stats) { st.RestoreFailures++ })
		lg.WithError(err).Error("lazysnap: cannot restore remote snapshot; it is unavailable until a mount succeeds")
		return
	}
	s.addLayer(id, info.Name, true)
	s.count(func(st *Stats) { st.Restored++ })
	lg.Info("lazysnap: remote snapshot mounted again")
}

// remount clears mp of whatever is mounted there and mounts the layer.
func (s *Snapshotter) remount(ctx context.Context, mp string, labels map[string]string) error {
	if state, _ := mountState(mp); state != mountNone {
		if err := s.unmountLayer(ctx, mp); err != nil {
			return fmt.Errorf("clear mountpoint: %w", err)
		}
	}
	if err := s.fs.Mount(ctx, mp, labels); err != nil {
		if uerr := s.forceUnmount(ctx, mp); uerr != nil {
			return errors.Join(err, uerr)
		}
		return err
	}
	return nil
}

// ensureAvailable checks the remote layers among ids (a snapshot's parents)
// before their mounts are handed out: a layer that is mounted is Check-ed;
// one that is not mounted (failed restore) or whose mount died is mounted
// again. A layer that stays unusable is an errdefs.ErrUnavailable.
func (s *Snapshotter) ensureAvailable(ctx context.Context, ids []string) error {
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(s.cfg.concurrency)
	for _, id := range ids {
		l := s.layerOf(id)
		if l == nil {
			continue
		}
		g.Go(func() error { return s.checkLayer(gctx, id, l) })
	}
	return g.Wait()
}

func (s *Snapshotter) checkLayer(ctx context.Context, id string, l *layer) error {
	var info snapshots.Info
	if err := s.ms.WithTransaction(ctx, false, func(ctx context.Context) (err error) {
		_, info, _, err = storage.GetInfo(ctx, l.name)
		return err
	}); err != nil {
		return fmt.Errorf("remote snapshot %q: %w", l.name, err)
	}
	mp := s.fsPath(id)
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.mounted.Load() {
		cerr := s.fs.Check(ctx, mp, info.Labels)
		if cerr == nil {
			return nil
		}
		if state, _ := mountState(mp); state == mountLive {
			return fmt.Errorf("remote snapshot %q: %v: %w", l.name, cerr, errdefs.ErrUnavailable)
		}
		log.G(ctx).WithError(cerr).WithField("snapshot", l.name).Warn("lazysnap: remote layer mount is gone; mounting it again")
	}
	if err := s.remount(ctx, mp, info.Labels); err != nil {
		l.mounted.Store(false)
		log.G(ctx).WithError(err).WithField("snapshot", l.name).Warn("lazysnap: remote layer unavailable")
		return fmt.Errorf("remote snapshot %q: %v: %w", l.name, err, errdefs.ErrUnavailable)
	}
	l.mounted.Store(true)
	s.count(func(st *Stats) { st.Remounts++ })
	log.G(ctx).WithField("snapshot", l.name).Info("lazysnap: remote layer mounted again")
	return nil
}
