package pull

import (
	"fmt"

	"github.com/opencontainers/go-digest"
)

// State is where a layer is in a pull.
type State int

const (
	Waiting     State = iota // nothing has happened to the layer yet
	Downloading              // the blob is being fetched (a fallback layer, or one below the lazy ones)
	Unpacking                // the blob is here, the snapshot not yet
	Unpacked                 // an ordinary snapshot: downloaded and applied
	Lazy                     // a remote snapshot: mounted by the snapshotter, fetched on demand
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
	}
	return fmt.Sprintf("state %d", int(s))
}

// Final reports whether the layer's snapshot exists (Unpacked or Lazy).
func (s State) Final() bool { return s == Unpacked || s == Lazy }

// Layer is one layer of the image being pulled, bottom first.
type Layer struct {
	Digest digest.Digest // the compressed blob's digest, from the manifest
	Size   int64         // the compressed blob's size
	State  State
	Done   int64 // bytes downloaded, while Downloading
}
