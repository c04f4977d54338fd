package snapshotter

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/containerd/containerd/v2/core/snapshots"
	"github.com/containerd/containerd/v2/core/snapshots/storage"
	"github.com/containerd/errdefs"
	"golang.org/x/sys/unix"
)

// idMapping is a snapshot's user-namespace ID mapping: the labels
// snapshots.LabelSnapshotUIDMapping and LabelSnapshotGIDMapping that
// containerd 2 sets on a user-namespaced container's snapshot when the
// snapshotter advertises the "remap-ids" capability. As containerd's
// overlay snapshotter does, the snapshotter passes them on as the mount
// options uidmap= and gidmap=, and containerd's mount code (in the shim)
// mounts the lower dirs, remote layers included, through idmapped mounts:
// the container sees the image's owners through its map, nothing copied.
// The upper dir's root belongs to the container's root.
//
// Without the capability, containerd copies the image into a snapshot
// chowned through the map and still passes the labels with the
// container's snapshot over it: lower dirs whose root already belongs to
// the container's root are not mapped again (see forLowers).
type idMapping struct {
	uid, gid         string // validated label values: CONTAINER:HOST:SIZE[,...]
	rootUID, rootGID int    // the host IDs of the container's root
}

// idMappingOf reads the mapping labels; nil without them. containerd maps
// only with both, and only a map of the container's root is usable.
func idMappingOf(labels map[string]string) (*idMapping, error) {
	uid, hasUID := labels[snapshots.LabelSnapshotUIDMapping]
	gid, hasGID := labels[snapshots.LabelSnapshotGIDMapping]
	if !hasUID && !hasGID {
		return nil, nil
	}
	if !hasUID || !hasGID {
		return nil, fmt.Errorf("ID mapping: %s and %s go together: %w", snapshots.LabelSnapshotUIDMapping, snapshots.LabelSnapshotGIDMapping, errdefs.ErrInvalidArgument)
	}
	m := &idMapping{uid: uid, gid: gid}
	var err error
	if m.rootUID, err = rootOf(uid); err != nil {
		return nil, fmt.Errorf("ID mapping %s=%q: %w: %w", snapshots.LabelSnapshotUIDMapping, uid, err, errdefs.ErrInvalidArgument)
	}
	if m.rootGID, err = rootOf(gid); err != nil {
		return nil, fmt.Errorf("ID mapping %s=%q: %w: %w", snapshots.LabelSnapshotGIDMapping, gid, err, errdefs.ErrInvalidArgument)
	}
	return m, nil
}

// rootOf parses an ID map, ranges CONTAINER:HOST:SIZE joined by commas
// (decimal, 32-bit, no range past 2^32-1), and returns the host ID of
// container ID 0.
func rootOf(idmap string) (int, error) {
	root := -1
	for r := range strings.SplitSeq(idmap, ",") {
		f := strings.Split(r, ":")
		if len(f) != 3 {
			return 0, fmt.Errorf("range %q is not CONTAINER:HOST:SIZE", r)
		}
		var v [3]uint64
		for i, s := range f {
			n, err := strconv.ParseUint(s, 10, 32)
			if err != nil || s != strconv.FormatUint(n, 10) {
				return 0, fmt.Errorf("range %q: %q is not a decimal ID", r, s)
			}
			v[i] = n
		}
		if v[2] == 0 || v[0]+v[2] > 1<<32 || v[1]+v[2] > 1<<32 {
			return 0, fmt.Errorf("range %q is empty or past 2^32", r)
		}
		if v[0] == 0 && root < 0 {
			root = int(v[1])
		}
	}
	if root < 0 {
		return 0, fmt.Errorf("no range maps the container's root (ID 0)")
	}
	return root, nil
}

// options are the mount options that carry the mapping to containerd.
func (m *idMapping) options() []string {
	if m == nil {
		return nil
	}
	return []string{"uidmap=" + m.uid, "gidmap=" + m.gid}
}

// forLowers is the mapping to apply to snap's lower dirs: none when its
// nearest parent's root already belongs to the container's root, as in
// the copy containerd chowns through the map when the snapshotter lacks the
// remap-ids capability (mapping it again would shift its owners twice).
func (s *Snapshotter) forLowers(snap storage.Snapshot, m *idMapping) *idMapping {
	if m == nil || len(snap.ParentIDs) == 0 {
		return m
	}
	var st unix.Stat_t
	if err := unix.Stat(s.fsPath(snap.ParentIDs[0]), &st); err == nil && int(st.Uid) == m.rootUID && int(st.Gid) == m.rootGID {
		return nil
	}
	return m
}
