package snapshotter_test

import (
	"context"
	"fmt"
	"testing"

	"github.com/containerd/containerd/v2/core/snapshots"
	"github.com/containerd/containerd/v2/core/snapshots/testsuite"

	"github.com/lazysnap/lazysnap/snapshotter"
)

// suiteName is the name the suite runs under. The suite keys one quirk on
// it: under any name but "overlayfs" its Rename check renames a directory
// of a lower layer, which overlayfs refuses (EXDEV) unless redirect_dir is
// on, and redirect_dir stays off because upper dirs with redirect xattrs do
// not diff into portable layers. containerd's own overlay snapshotter runs
// the suite as "overlayfs" for that reason; so does this one.
const suiteName = "overlayfs"

// TestConformance runs containerd's snapshotter suite. The suite never sets
// the target label, so the FileSystem must never be called.
func TestConformance(t *testing.T) {
	requireRoot(t)
	testsuite.SnapshotterSuite(t, suiteName, func(ctx context.Context, root string) (snapshots.Snapshotter, func() error, error) {
		fs := newFakeFS()
		sn, err := snapshotter.New(ctx, root, fs)
		if err != nil {
			return nil, nil, err
		}
		return sn, func() error {
			if calls := fs.Calls(""); len(calls) > 0 {
				return fmt.Errorf("FileSystem called by the conformance suite: %+v", calls)
			}
			return sn.Close()
		}, nil
	})
}
