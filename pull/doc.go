// Package pull pulls an image through containerd so that a remote
// snapshotter (lazysnap) can mount its eStargz layers lazily, and follows
// each layer's progress while it does.
//
// # Concepts
//
// Connect connects to containerd (Env: where ctr would), failing at once
// with ErrNoContainerd when nothing listens on its socket.
//
// Image runs containerd's client.Pull with unpacking into the named
// snapshotter and with the image handler wrapper that sets the labels
// containerd's CRI plugin sets on every layer descriptor
// (containerd.io/snapshot/cri.image-ref, .layer-digest, .image-layers;
// see snapshotter/labels.go). containerd passes those labels to the
// snapshotter's Prepare, which is how a remote snapshotter finds the image
// and the layer to mount. Layers it does not mount are fetched and applied
// the ordinary way.
//
// A Tracker follows one pull. Its handler wrapper (Wrap) learns the
// manifest's layers and config, and sees which layer blobs are being
// fetched: containerd's unpacker calls the handlers for exactly the blobs
// it fetches, so a layer mounted lazily never passes there. Poll asks
// containerd for the rest: the content store's ingest statuses (bytes
// downloaded so far), the image config (diff IDs, hence chain IDs) and the
// snapshotter's Stat of each layer's chain ID. A Layer's State goes
// Waiting → Downloading → Unpacking → Unpacked for an ordinary layer, and
// Waiting → Lazy for a remote snapshot (its snapshot carries
// snapshotter.LabelRemote), and Waiting → LineRate for a layer the
// snapshotter pulled itself (snapshotter.LabelLineRate). containerd shows
// nothing of such a layer while the snapshotter pulls it: a caller that
// learns it elsewhere (lazysnap's status) may show it as PullingLineRate.
// Unpacked, Lazy and LineRate are final: once seen they are not asked
// again.
//
// A Renderer shows the Tracker's snapshots as they come (Options.Progress):
// on a terminal a block of one line per layer redrawn in place, cut to the
// width and, when the layers outnumber the rows, those in progress and a
// count of the rest; elsewhere (logs) a line per event: a new state, or
// another quarter of a download. WriteSummary writes the final states and
// a line on the whole pull.
//
// # Errors
//
// Image returns the pull's error (wrapped with the reference), else the
// first error of the Options.Progress callback, as that callback returned
// it, else an error reading the pulled image's layers. Poll reports no
// errors: a failed status call leaves a layer as it was, since the pull
// itself reports what matters. NewRenderer refuses an unknown mode with
// ErrMode; a Renderer returns its writer's errors. The package logs nothing.
//
// # Concurrency
//
// A Tracker is safe for concurrent use: containerd calls the wrapped
// handlers from many goroutines while Poll runs in another, and Poll does
// not hold the tracker's lock during its calls to containerd. Image calls
// Options.Progress from one goroutine at a time, never concurrently, and
// not after Image has returned. A Renderer is for one goroutine at a time.
package pull
