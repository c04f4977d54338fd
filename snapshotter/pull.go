package snapshotter

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"time"

	"github.com/containerd/containerd/v2/core/snapshots"
	"github.com/containerd/containerd/v2/core/snapshots/storage"
	continuityfs "github.com/containerd/continuity/fs"
	"github.com/containerd/errdefs"
	"github.com/containerd/log"
	"github.com/opencontainers/go-digest"
)

// Puller is an optional interface of a FileSystem: Pull fetches a layer
// that Mount found not lazily loadable (its error wrapped ReasonNotLazy)
// and unpacks it into the request's Dir, the active snapshot's empty fs
// directory, as containerd's applier would (overlayfs whiteouts). It must
// check the blob against the layer digest the labels name before it
// returns nil, and return the layer's diff ID. On error Dir may hold part
// of the layer; the snapshotter removes it.
type Puller interface {
	Pull(ctx context.Context, req PullRequest) (PullResult, error)
}

// PullRequest is what a Pull is asked.
type PullRequest struct {
	// Dir is where the layer's files go.
	Dir string `json:"dir"`
	// Parents are the lower dirs, nearest first, for the attributes of
	// the directories the layer implies.
	Parents []string `json:"parents,omitempty"`
	// Labels are the snapshot's, as Mount got them.
	Labels map[string]string `json:"labels,omitempty"`
	// NotLazy is why Mount found the layer not lazy (its error).
	NotLazy string `json:"not_lazy,omitempty"`
}

// PullResult is what a Pull learnt of the layer.
type PullResult struct {
	// DiffID is the digest of the layer's uncompressed tar: with the
	// parent's name it must give the target's chain ID.
	DiffID digest.Digest
	// Bytes is the compressed size fetched.
	Bytes int64
}

// ReasonPullFailed: the layer was not lazy, lazysnap pulled it itself
// (Puller) and that failed; Prepare returned the error, and no snapshot
// is left.
const ReasonPullFailed Reason = "pull-failed"

// WithoutPull makes Prepare hand a layer that is not lazy back to
// containerd (the ordinary pull) even when the FileSystem is a Puller.
func WithoutPull() Opt {
	return func(c *config) { c.noPull = true }
}

// puller returns the FileSystem's Puller, nil if it has none or pulling is
// off.
func (s *Snapshotter) puller() Puller {
	p, ok := s.fs.(Puller)
	if !ok || s.cfg.noPull {
		return nil
	}
	return p
}

// pullLayer answers Prepare(key) for a layer that is not lazy by pulling it
// through the Puller into the active snapshot and committing that under
// the target name: an ordinary committed snapshot (no LabelRemote), as if
// containerd had applied it. The diff ID the pull computed must give the
// target chain ID with the parent's. On failure the snapshot is removed
// and the error returned: containerd's pull fails with it.
func (s *Snapshotter) pullLayer(ctx context.Context, p Puller, snap storage.Snapshot, key, parent, target string, labels map[string]string, why error) (bool, error) {
	ref, dg := sourceOf(labels)
	lg := log.G(ctx).WithFields(log.Fields{"key": key, "target": target, "ref": ref, "digest": dg})
	parents := make([]string, len(snap.ParentIDs))
	for i, id := range snap.ParentIDs {
		parents[i] = s.fsPath(id)
	}
	start := time.Now()
	res, err := p.Pull(ctx, PullRequest{Dir: s.fsPath(snap.ID), Parents: parents, Labels: maps.Clone(labels), NotLazy: why.Error()})
	if err == nil {
		err = checkChain(parent, target, res.DiffID)
	}
	var usage snapshots.Usage
	if err == nil {
		var du continuityfs.Usage
		du, err = continuityfs.DiskUsage(ctx, s.fsPath(snap.ID))
		usage = snapshots.Usage(du)
	}
	if err == nil {
		err = s.ms.WithTransaction(ctx, true, func(ctx context.Context) error {
			cl := maps.Clone(labels)
			cl[LabelLineRate] = "true"
			_, err := storage.CommitActive(ctx, key, target, usage, snapshots.WithLabels(cl))
			return err
		})
		if errdefs.IsAlreadyExists(err) {
			// another Prepare committed the same target first
			s.removeQuietly(ctx, key)
			return true, fmt.Errorf("target snapshot %q: %w", target, errdefs.ErrAlreadyExists)
		}
	}
	if err != nil {
		s.removeQuietly(ctx, key)
		if cerr := ctx.Err(); cerr != nil {
			return true, fmt.Errorf("prepare %q: %w", key, cerr)
		}
		s.count(func(st *Stats) { st.Fallbacks[ReasonPullFailed]++ })
		err = fmt.Errorf("lazysnap pulled layer %s itself (%v) and that failed: %w", dg, why, err)
		s.fallbacks.add(Fallback{Ref: ref, Digest: dg, Target: target, Reason: ReasonPullFailed, Err: err.Error(), Time: time.Now()})
		lg.WithError(err).Error("lazysnap: line-rate pull failed; no snapshot left")
		return true, err
	}
	s.count(func(st *Stats) { st.Pulls++; st.PulledBytes += uint64(res.Bytes) })
	s.fallbacks.mounted(ref, dg)
	lg.WithFields(log.Fields{"bytes": res.Bytes, "seconds": time.Since(start).Seconds(), "diff_id": res.DiffID, "reason": string(ReasonNotLazy), "not_lazy": why.Error()}).
		Info("lazysnap: layer pulled at line rate")
	return true, fmt.Errorf("target snapshot %q: %w", target, errdefs.ErrAlreadyExists)
}

// errChain: a pulled layer's diff ID does not give the chain ID containerd
// asked for.
var errChain = errors.New("diff ID does not match the target chain ID")

// checkChain checks diffID against the target chain ID when the target is
// a digest, as containerd names an unpacked layer's snapshot: the chain ID
// of the first layer is its diff ID, of a later one the digest of
// "<parent chain ID> <diff ID>".
func checkChain(parent, target string, diffID digest.Digest) error {
	want, err := digest.Parse(target)
	if err != nil {
		return nil // a client that names snapshots otherwise
	}
	got := diffID
	if parent != "" {
		got = digest.FromString(parent + " " + diffID.String())
	}
	if got != want {
		return fmt.Errorf("%w: diff ID %s gives chain ID %s, containerd asked for %s", errChain, diffID, got, want)
	}
	return nil
}
