package remote

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"

	lfs "github.com/lazysnap/lazysnap/fs"
	"github.com/lazysnap/lazysnap/fs/fetch"
)

// MountState is what another process needs, with a duplicate of its
// /dev/fuse descriptor, to serve a mounted layer (Adopt): plain data, for
// handing over as JSON.
type MountState struct {
	Mountpoint string            `json:"mountpoint"`
	Labels     map[string]string `json:"labels"`
	Session    lfs.Session       `json:"session"`
}

// openTablePath is the open table of the mount at mountpoint.
func openTablePath(dir, mountpoint string) string {
	h := sha256.Sum256([]byte(mountpoint))
	return filepath.Join(dir, hex.EncodeToString(h[:16])+".opens")
}

// Handover returns the state of the layer mounted at mountpoint and a
// duplicate of its /dev/fuse descriptor: while the descriptor is open,
// the mount outlives this process. It needs Options.Handover.
func (r *FS) Handover(mountpoint string) (MountState, *os.File, error) {
	r.mu.Lock()
	ml, ok := r.mounted[mountpoint]
	r.mu.Unlock()
	if !ok {
		return MountState{}, nil, fmt.Errorf("%w at %s", ErrNotMounted, mountpoint)
	}
	s := ml.mount.Session()
	if s.Opens == "" {
		return MountState{}, nil, fmt.Errorf("remote: %s was mounted without Options.Handover", mountpoint)
	}
	fd, err := ml.mount.Dup()
	if err != nil {
		return MountState{}, nil, err
	}
	return MountState{Mountpoint: mountpoint, Labels: ml.labels, Session: s}, fd, nil
}

// Adopt serves a layer another process mounted, from its state and a
// duplicate of its descriptor (Handover); the caller closes fd. The
// layer is opened anew (index, content directory, prefetch) as Mount
// does, and the kernel resends what the other process left unanswered.
func (r *FS) Adopt(ctx context.Context, st MountState, fd *os.File) error {
	return r.mount(ctx, st.Mountpoint, st.Labels, func(l *fetch.Layer) (*lfs.Mount, error) {
		return lfs.Adopt(l, st.Mountpoint, fd, st.Session)
	})
}

// Detach stops serving every mounted layer and leaves them mounted, for
// a process that adopts them; requests being handled are answered first.
func (r *FS) Detach() {
	r.mu.Lock()
	mounted := r.mounted
	r.mounted = map[string]*mountedLayer{}
	r.mu.Unlock()
	for _, ml := range mounted {
		r.stop(ml, true)
	}
}
