package pull

import (
	"context"
	"encoding/json"
	"strings"
	"sync"

	"github.com/containerd/containerd/v2/core/content"
	"github.com/containerd/containerd/v2/core/images"
	"github.com/containerd/containerd/v2/core/snapshots"
	"github.com/lazysnap/lazysnap/snapshotter"
	"github.com/opencontainers/go-digest"
	"github.com/opencontainers/image-spec/identity"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// Tracker follows one pull. Its handler wrapper records the layers and
// config of the image's manifest and which blobs are being fetched; Poll
// asks containerd for the rest. The zero Tracker is not usable: use
// NewTracker.
type Tracker struct {
	mu       sync.Mutex
	layers   []ocispec.Descriptor
	config   ocispec.Descriptor
	haveConf bool                   // the config blob is in the content store
	fetching map[digest.Digest]bool // layer blob handler running (true) or done (false)
	chain    []digest.Digest        // chain IDs, once the config has been read
	state    []State                // final states, which do not change again
}

// NewTracker returns a Tracker of a pull that has not started.
func NewTracker() *Tracker {
	return &Tracker{fetching: map[digest.Digest]bool{}}
}

// Wrap is an image handler wrapper (containerd.WithImageHandlerWrapper).
// containerd's unpacker calls the handler it wraps for exactly the layer
// blobs it fetches, so a layer the remote snapshotter mounts lazily never
// passes here. The first manifest handled is the image's.
func (t *Tracker) Wrap(h images.Handler) images.Handler {
	return images.HandlerFunc(func(ctx context.Context, desc ocispec.Descriptor) ([]ocispec.Descriptor, error) {
		layer := images.IsLayerType(desc.MediaType)
		if layer {
			t.mu.Lock()
			t.fetching[desc.Digest] = true
			t.mu.Unlock()
		}
		children, err := h.Handle(ctx, desc)
		t.mu.Lock()
		defer t.mu.Unlock()
		switch {
		case layer && err == nil:
			t.fetching[desc.Digest] = false
		case layer:
			delete(t.fetching, desc.Digest)
		case err == nil && images.IsManifestType(desc.MediaType) && t.layers == nil:
			for _, c := range children {
				if images.IsLayerType(c.MediaType) {
					t.layers = append(t.layers, c)
				} else if images.IsConfigType(c.MediaType) {
					t.config = c
				}
			}
		case err == nil && images.IsConfigType(desc.MediaType) && desc.Digest == t.config.Digest:
			t.haveConf = true
		}
		return children, err
	})
}

// ManifestLayers returns the layers of the image's manifest, once known
// (nil before).
func (t *Tracker) ManifestLayers() []ocispec.Descriptor {
	t.mu.Lock()
	defer t.mu.Unlock()
	return append([]ocispec.Descriptor(nil), t.layers...)
}

// Poll returns the layers' progress, bottom first; nil until the manifest
// is known. cs is containerd's content store and sn the snapshotter the
// pull unpacks into. Errors of the status calls only leave a layer as it
// was: the pull itself reports what matters.
func (t *Tracker) Poll(ctx context.Context, cs content.Store, sn snapshots.Snapshotter) []Layer {
	t.mu.Lock()
	layers := append([]ocispec.Descriptor(nil), t.layers...)
	config, haveConf, chain := t.config, t.haveConf, t.chain
	state := append([]State(nil), t.state...)
	t.mu.Unlock()
	if len(layers) == 0 {
		return nil
	}
	// the calls to containerd, without holding up the handlers
	if chain == nil && haveConf {
		chain = readChain(ctx, cs, config, len(layers))
	}
	if len(state) != len(layers) {
		state = make([]State, len(layers))
	}
	for i := range layers {
		if state[i].Final() || chain == nil {
			continue
		}
		if info, err := sn.Stat(ctx, chain[i].String()); err == nil {
			state[i] = snapshotState(info)
		}
	}
	statuses, _ := cs.ListStatuses(ctx)

	t.mu.Lock()
	defer t.mu.Unlock()
	t.chain, t.state = chain, state
	out := make([]Layer, len(layers))
	for i, l := range layers {
		out[i] = Layer{Digest: l.Digest, Size: l.Size, State: state[i]}
		if !state[i].Final() {
			out[i].State, out[i].Done = fetchState(l, t.fetching, statuses)
		}
	}
	return out
}

// snapshotState is the final state of a layer whose snapshot exists.
func snapshotState(info snapshots.Info) State {
	switch {
	case info.Labels[snapshotter.LabelRemote] != "":
		return Lazy
	case info.Labels[snapshotter.LabelLineRate] != "":
		return LineRate
	}
	return Unpacked
}

// fetchState is a layer's state before its snapshot exists.
func fetchState(l ocispec.Descriptor, fetching map[digest.Digest]bool, statuses []content.Status) (State, int64) {
	running, seen := fetching[l.Digest]
	if seen && !running {
		return Unpacking, 0
	}
	for _, st := range statuses {
		if st.Expected == l.Digest || strings.HasSuffix(st.Ref, l.Digest.String()) {
			return Downloading, st.Offset
		}
	}
	if running {
		return Downloading, 0
	}
	return Waiting, 0
}

// readChain reads the image config and returns its layers' chain IDs, or
// nil if it cannot (yet), or the config does not have n layers.
func readChain(ctx context.Context, cs content.Store, config ocispec.Descriptor, n int) []digest.Digest {
	b, err := content.ReadBlob(ctx, cs, config)
	if err != nil {
		return nil
	}
	var img ocispec.Image
	if err := json.Unmarshal(b, &img); err != nil || len(img.RootFS.DiffIDs) != n {
		return nil
	}
	return identity.ChainIDs(append([]digest.Digest(nil), img.RootFS.DiffIDs...))
}
