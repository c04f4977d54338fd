package main

// Live progress of `lazysnap pull`: a tracker that learns the layers from the
// image handlers and polls containerd (ingest statuses of the content store,
// snapshots of the snapshotter), and two renderers of what it sees: one that
// redraws a block of lines in place on a terminal, one that prints a line per
// event for logs.

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strings"
	"sync"

	"github.com/containerd/containerd/v2/core/content"
	"github.com/containerd/containerd/v2/core/images"
	"github.com/containerd/containerd/v2/core/snapshots"
	"github.com/lazysnap/lazysnap/snapshotter"
	"github.com/opencontainers/go-digest"
	"github.com/opencontainers/image-spec/identity"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"golang.org/x/sys/unix"
)

// pullState is where a layer is in a pull.
type pullState int

const (
	pullWaiting     pullState = iota
	pullDownloading           // the blob is being fetched (fallback or first layers)
	pullUnpacking             // the blob is here, the snapshot not yet
	pullUnpacked              // an ordinary snapshot: downloaded and applied
	pullLazy                  // a remote snapshot: mounted by lazysnap, fetched on demand
)

func (s pullState) String() string {
	switch s {
	case pullWaiting:
		return "waiting"
	case pullDownloading:
		return "downloading"
	case pullUnpacking:
		return "downloaded, unpacking"
	case pullUnpacked:
		return "unpacked"
	case pullLazy:
		return "lazy (remote snapshot)"
	}
	return fmt.Sprintf("state %d", int(s))
}

// final reports whether the layer's snapshot exists.
func (s pullState) final() bool { return s == pullUnpacked || s == pullLazy }

// pullLayer is one layer as the display shows it.
type pullLayer struct {
	Digest digest.Digest
	Size   int64 // compressed blob size
	State  pullState
	Done   int64 // bytes downloaded, while downloading
}

// percent is done/total in whole percent, clamped to 0..100.
func percent(done, total int64) int {
	if total <= 0 || done <= 0 {
		return 0
	}
	if done >= total {
		return 100
	}
	return int(done * 100 / total)
}

// formatPullLayer is layer i's line.
func formatPullLayer(i int, l pullLayer) string {
	head := fmt.Sprintf("layer %d %s %10s  ", i, shortDigest(l.Digest.String()), humanBytes(l.Size))
	if l.State == pullDownloading {
		return head + fmt.Sprintf("downloading %s / %s (%d%%)", humanBytes(l.Done), humanBytes(l.Size), percent(l.Done, l.Size))
	}
	return head + l.State.String()
}

// pullRenderer shows successive snapshots of a pull's layers.
type pullRenderer interface {
	update(layers []pullLayer) error
	// finish is called once after the last update, before the summary.
	finish() error
}

// plainRenderer prints a line when a layer changes state, and while it
// downloads each time another quarter of it has arrived: readable in logs.
type plainRenderer struct {
	w    io.Writer
	last []pullLayer
}

func (r *plainRenderer) update(layers []pullLayer) error {
	for i, l := range layers {
		if i < len(r.last) && !plainEvent(r.last[i], l) {
			continue
		}
		if i >= len(r.last) && l.State == pullWaiting {
			continue // a new layer that nothing happened to yet
		}
		if _, err := fmt.Fprintln(r.w, formatPullLayer(i, l)); err != nil {
			return err
		}
	}
	r.last = append(r.last[:0], layers...)
	return nil
}

// plainEvent reports whether going from prev to cur is worth a line.
func plainEvent(prev, cur pullLayer) bool {
	if prev.State != cur.State {
		return true
	}
	return cur.State == pullDownloading && percent(cur.Done, cur.Size)/25 > percent(prev.Done, prev.Size)/25
}

func (r *plainRenderer) finish() error { return nil }

// ttyRenderer redraws one line per layer in place with ANSI cursor
// movement; finish erases them so that the summary takes their place.
type ttyRenderer struct {
	w      io.Writer
	width  int // columns; lines are cut to fit so that none wraps (0: unknown)
	height int // rows; a frame has fewer, or the cursor could not go back up (0: unknown)
	lines  int // lines drawn by the last update
	frame  string
}

func (r *ttyRenderer) update(layers []pullLayer) error {
	var b strings.Builder
	lines := frameLines(layers, r.height-1)
	for _, line := range lines {
		if r.width > 1 && len(line) >= r.width {
			line = line[:r.width-1]
		}
		b.WriteString("\r\x1b[2K" + line + "\n")
	}
	frame := b.String()
	if frame == r.frame {
		return nil
	}
	var out strings.Builder
	if r.lines > 0 {
		fmt.Fprintf(&out, "\x1b[%dA", r.lines)
	}
	out.WriteString(frame)
	if _, err := io.WriteString(r.w, out.String()); err != nil {
		return err
	}
	r.frame, r.lines = frame, len(lines)
	return nil
}

// frameLines returns the lines of a frame of at most max lines (max < 1: no
// limit). When the layers do not fit, those still in progress are shown,
// and a last line counts the others.
func frameLines(layers []pullLayer, max int) []string {
	var lines []string
	if max < 1 || len(layers) <= max {
		for i, l := range layers {
			lines = append(lines, formatPullLayer(i, l))
		}
		return lines
	}
	done := 0
	for i, l := range layers {
		if l.State.final() {
			done++
		} else if len(lines) < max-1 {
			lines = append(lines, formatPullLayer(i, l))
		}
	}
	return append(lines, fmt.Sprintf("and %d more layers; %d of %d done", len(layers)-len(lines), done, len(layers)))
}

func (r *ttyRenderer) finish() error {
	if r.lines == 0 {
		return nil
	}
	_, err := fmt.Fprintf(r.w, "\x1b[%dA\r\x1b[J", r.lines)
	r.lines, r.frame = 0, ""
	return err
}

// terminalSize reports whether w is a terminal, and its size in columns
// and rows (0 if unknown).
func terminalSize(w io.Writer) (cols, rows int, ok bool) {
	f, ok := w.(*os.File)
	if !ok {
		return 0, 0, false
	}
	if _, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS); err != nil {
		return 0, 0, false
	}
	ws, err := unix.IoctlGetWinsize(int(f.Fd()), unix.TIOCGWINSZ)
	if err != nil {
		return 0, 0, true
	}
	return int(ws.Col), int(ws.Row), true
}

// newPullRenderer picks the renderer for mode: "tty", "plain", or "auto"
// (tty when w is a terminal).
func newPullRenderer(mode string, w io.Writer) (pullRenderer, error) {
	width, height, isTTY := terminalSize(w)
	switch mode {
	case "auto":
		if isTTY {
			return &ttyRenderer{w: w, width: width, height: height}, nil
		}
		return &plainRenderer{w: w}, nil
	case "tty":
		return &ttyRenderer{w: w, width: width, height: height}, nil
	case "plain":
		return &plainRenderer{w: w}, nil
	}
	return nil, fmt.Errorf("unknown progress mode %q (want auto, tty or plain)", mode)
}

// pullTracker follows one pull. Its handler wrapper records the layers and
// config of the image's manifest and which blobs are being fetched; poll
// asks containerd for the rest.
type pullTracker struct {
	mu       sync.Mutex
	layers   []ocispec.Descriptor
	config   ocispec.Descriptor
	haveConf bool                   // the config blob is in the content store
	fetching map[digest.Digest]bool // layer blob handler running (true) or done (false)
	chain    []digest.Digest        // chain IDs, once the config has been read
	state    []pullState            // final states, which do not change again
}

func newPullTracker() *pullTracker {
	return &pullTracker{fetching: map[digest.Digest]bool{}}
}

// wrap is an image handler wrapper. containerd's unpacker calls the handler
// it wraps for exactly the layer blobs it fetches, so a layer the remote
// snapshotter mounts lazily never passes here.
func (t *pullTracker) wrap(h images.Handler) images.Handler {
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

// manifestLayers returns the layers of the image's manifest, once known.
func (t *pullTracker) manifestLayers() []ocispec.Descriptor {
	t.mu.Lock()
	defer t.mu.Unlock()
	return append([]ocispec.Descriptor(nil), t.layers...)
}

// poll returns the layers' progress. Errors of the status calls only leave
// a layer as it was: the pull itself reports what matters.
func (t *pullTracker) poll(ctx context.Context, cs content.Store, sn snapshots.Snapshotter) []pullLayer {
	t.mu.Lock()
	layers := append([]ocispec.Descriptor(nil), t.layers...)
	config, haveConf, chain := t.config, t.haveConf, t.chain
	state := append([]pullState(nil), t.state...)
	t.mu.Unlock()
	if len(layers) == 0 {
		return nil
	}
	// the calls to containerd, without holding up the handlers
	if chain == nil && haveConf {
		chain = readChain(ctx, cs, config, len(layers))
	}
	if len(state) != len(layers) {
		state = make([]pullState, len(layers))
	}
	for i := range layers {
		if state[i].final() || chain == nil {
			continue
		}
		if info, err := sn.Stat(ctx, chain[i].String()); err == nil {
			state[i] = pullUnpacked
			if info.Labels[snapshotter.LabelRemote] != "" {
				state[i] = pullLazy
			}
		}
	}
	statuses, _ := cs.ListStatuses(ctx)

	t.mu.Lock()
	defer t.mu.Unlock()
	t.chain, t.state = chain, state
	out := make([]pullLayer, len(layers))
	for i, l := range layers {
		out[i] = pullLayer{Digest: l.Digest, Size: l.Size, State: state[i]}
		if !state[i].final() {
			out[i].State, out[i].Done = fetchState(l, t.fetching, statuses)
		}
	}
	return out
}

// fetchState is a layer's state before its snapshot exists.
func fetchState(l ocispec.Descriptor, fetching map[digest.Digest]bool, statuses []content.Status) (pullState, int64) {
	running, seen := fetching[l.Digest]
	if seen && !running {
		return pullUnpacking, 0
	}
	for _, st := range statuses {
		if st.Expected == l.Digest || strings.HasSuffix(st.Ref, l.Digest.String()) {
			return pullDownloading, st.Offset
		}
	}
	if running {
		return pullDownloading, 0
	}
	return pullWaiting, 0
}

// readChain reads the image config and returns its layers' chain IDs, or
// nil if it cannot (yet).
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
