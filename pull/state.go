package pull

import (
	"fmt"

	"github.com/opencontainers/go-digest"
)

// State is where a layer is in a pull.
type State int

const (
	Waiting         State = iota // nothing has happened to the layer yet
	Downloading                  // the blob is being fetched (a fallback layer, or one below the lazy ones)
	Unpacking                    // the blob is here, the snapshot not yet
	Unpacked                     // an ordinary snapshot: downloaded and applied
	Lazy                         // a remote snapshot: mounted by the snapshotter, fetched on demand
	PullingLineRate              // not lazy: the snapshotter is pulling it itself (containerd's API does not show it: lazysnap pull learns it from lazysnap status)
	LineRate                     // not lazy: pulled by the snapshotter at line rate (an ordinary snapshot)
)

func (s State) String() string {
	switch s {
	case Waiting:
		return "waiting"
	case Downloading:
		return "downloading"
	case Unpacking:
		return "downloaded, unpacking"
	case Unpacked:
		return "unpacked"
	case Lazy:
		return "lazy (remote snapshot)"
	case PullingLineRate:
		return "not lazy, pulling at line rate"
	case LineRate:
		return "not lazy, pulled at line rate"
	}
	return fmt.Sprintf("state %d", int(s))
}

// Final reports whether the layer's snapshot exists (Unpacked, Lazy or
// LineRate).
func (s State) Final() bool { return s == Unpacked || s == Lazy || s == LineRate }

// Layer is one layer of the image being pulled, bottom first.
type Layer struct {
	Digest digest.Digest // the compressed blob's digest, from the manifest
	Size   int64         // the compressed blob's size
	State  State
	Done   int64 // bytes downloaded, while Downloading
}
