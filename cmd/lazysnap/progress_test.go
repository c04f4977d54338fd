package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/containerd/containerd/v2/core/content"
	"github.com/containerd/containerd/v2/core/images"
	"github.com/containerd/containerd/v2/core/snapshots"
	"github.com/containerd/errdefs"
	"github.com/lazysnap/lazysnap/snapshotter"
	"github.com/opencontainers/go-digest"
	"github.com/opencontainers/image-spec/identity"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"golang.org/x/sys/unix"
)

var (
	testDigestA = digest.FromString("layer a")
	testDigestB = digest.FromString("layer b")
)

func TestFormatPullLayer(t *testing.T) {
	short := shortDigest(testDigestA.String())
	for _, tc := range []struct {
		name  string
		layer pullLayer
		want  string
	}{
		{"waiting", pullLayer{Digest: testDigestA, Size: 3 << 20}, "layer 0 " + short + "    3.0 MiB  waiting"},
		{"downloading", pullLayer{Digest: testDigestA, Size: 24 << 20, State: pullDownloading, Done: 6 << 20},
			"layer 0 " + short + "   24.0 MiB  downloading 6.0 MiB / 24.0 MiB (25%)"},
		{"downloading, nothing yet", pullLayer{Digest: testDigestA, Size: 100, State: pullDownloading},
			"layer 0 " + short + "      100 B  downloading 0 B / 100 B (0%)"},
		{"unpacking", pullLayer{Digest: testDigestA, Size: 2048, State: pullUnpacking}, "layer 0 " + short + "    2.0 KiB  downloaded, unpacking"},
		{"unpacked", pullLayer{Digest: testDigestA, Size: 2048, State: pullUnpacked}, "layer 0 " + short + "    2.0 KiB  unpacked"},
		{"lazy", pullLayer{Digest: testDigestA, Size: 1 << 30, State: pullLazy}, "layer 0 " + short + "    1.0 GiB  lazy (remote snapshot)"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := formatPullLayer(0, tc.layer); got != tc.want {
				t.Errorf("got  %q\nwant %q", got, tc.want)
			}
		})
	}
}

func TestPercent(t *testing.T) {
	for _, tc := range []struct {
		name        string
		done, total int64
		want        int
	}{
		{"nothing", 0, 100, 0},
		{"unknown total", 50, 0, 0},
		{"half", 50, 100, 50},
		{"rounds down", 999, 1000, 99},
		{"all", 100, 100, 100},
		{"more than all", 150, 100, 100},
		{"negative", -1, 100, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := percent(tc.done, tc.total); got != tc.want {
				t.Errorf("percent(%d, %d) = %d, want %d", tc.done, tc.total, got, tc.want)
			}
		})
	}
}

func dl(d digest.Digest, done int64) pullLayer {
	return pullLayer{Digest: d, Size: 100, State: pullDownloading, Done: done}
}

func st(d digest.Digest, s pullState) pullLayer { return pullLayer{Digest: d, Size: 100, State: s} }

func TestPlainRenderer(t *testing.T) {
	line := func(i int, l pullLayer) string { return formatPullLayer(i, l) + "\n" }
	for _, tc := range []struct {
		name    string
		updates [][]pullLayer
		want    string
	}{
		{"nothing known yet", [][]pullLayer{nil, nil}, ""},
		{"new waiting layers print nothing", [][]pullLayer{{st(testDigestA, pullWaiting), st(testDigestB, pullWaiting)}}, ""},
		{"lazy layers: one line each",
			[][]pullLayer{
				{st(testDigestA, pullWaiting), st(testDigestB, pullWaiting)},
				{st(testDigestA, pullLazy), st(testDigestB, pullWaiting)},
				{st(testDigestA, pullLazy), st(testDigestB, pullLazy)},
				{st(testDigestA, pullLazy), st(testDigestB, pullLazy)},
			},
			line(0, st(testDigestA, pullLazy)) + line(1, st(testDigestB, pullLazy))},
		{"download: start, quarters, unpack",
			[][]pullLayer{
				{dl(testDigestA, 0)},
				{dl(testDigestA, 10)},
				{dl(testDigestA, 26)},
				{dl(testDigestA, 40)},
				{dl(testDigestA, 99)},
				{st(testDigestA, pullUnpacking)},
				{st(testDigestA, pullUnpacked)},
			},
			line(0, dl(testDigestA, 0)) + line(0, dl(testDigestA, 26)) + line(0, dl(testDigestA, 99)) +
				line(0, st(testDigestA, pullUnpacking)) + line(0, st(testDigestA, pullUnpacked))},
		{"a layer seen first mid-download",
			[][]pullLayer{{dl(testDigestA, 60)}},
			line(0, dl(testDigestA, 60))},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var b bytes.Buffer
			render(t, &plainRenderer{w: &b}, tc.updates)
			if b.String() != tc.want {
				t.Errorf("got\n%s\nwant\n%s", b.String(), tc.want)
			}
			if strings.Contains(b.String(), "\x1b") || strings.Contains(b.String(), "\r") {
				t.Errorf("plain output has terminal control characters: %q", b.String())
			}
		})
	}
}

func TestTTYRenderer(t *testing.T) {
	a0, a50, bl := formatPullLayer(0, dl(testDigestA, 0)), formatPullLayer(0, dl(testDigestA, 50)), formatPullLayer(1, st(testDigestB, pullLazy))
	for _, tc := range []struct {
		name    string
		width   int
		height  int
		updates [][]pullLayer
		want    string
	}{
		{"nothing to draw", 80, 24, [][]pullLayer{nil}, ""},
		{"first frame, then redrawn in place",
			80, 24,
			[][]pullLayer{{dl(testDigestA, 0)}, {dl(testDigestA, 50), st(testDigestB, pullLazy)}},
			"\r\x1b[2K" + a0 + "\n" +
				"\x1b[1A" + "\r\x1b[2K" + a50 + "\n" + "\r\x1b[2K" + bl + "\n" +
				"\x1b[2A\r\x1b[J"},
		{"an unchanged frame is not redrawn",
			80, 24,
			[][]pullLayer{{dl(testDigestA, 0)}, {dl(testDigestA, 0)}},
			"\r\x1b[2K" + a0 + "\n" + "\x1b[1A\r\x1b[J"},
		{"lines are cut to the width",
			20, 24,
			[][]pullLayer{{dl(testDigestA, 0)}},
			"\r\x1b[2K" + a0[:19] + "\n" + "\x1b[1A\r\x1b[J"},
		{"more layers than rows: those in progress and a count",
			80, 3,
			[][]pullLayer{{st(testDigestA, pullLazy), dl(testDigestA, 0), st(testDigestB, pullUnpacked), dl(testDigestB, 50)}},
			"\r\x1b[2K" + formatPullLayer(1, dl(testDigestA, 0)) + "\n" +
				"\r\x1b[2Kand 3 more layers; 2 of 4 done\n" + "\x1b[2A\r\x1b[J"},
		{"as many layers as fit",
			80, 3,
			[][]pullLayer{{st(testDigestA, pullLazy), dl(testDigestA, 0)}},
			"\r\x1b[2K" + formatPullLayer(0, st(testDigestA, pullLazy)) + "\n" +
				"\r\x1b[2K" + formatPullLayer(1, dl(testDigestA, 0)) + "\n" + "\x1b[2A\r\x1b[J"},
		{"unknown size: neither cut nor left out",
			0, 0,
			[][]pullLayer{{dl(testDigestA, 0)}},
			"\r\x1b[2K" + a0 + "\n" + "\x1b[1A\r\x1b[J"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var b bytes.Buffer
			render(t, &ttyRenderer{w: &b, width: tc.width, height: tc.height}, tc.updates)
			if b.String() != tc.want {
				t.Errorf("got  %q\nwant %q", b.String(), tc.want)
			}
		})
	}
}

// render feeds updates to r and finishes it.
func render(t *testing.T, r pullRenderer, updates [][]pullLayer) {
	t.Helper()
	for _, u := range updates {
		if err := r.update(u); err != nil {
			t.Fatal(err)
		}
	}
	if err := r.finish(); err != nil {
		t.Fatal(err)
	}
}

func TestNewPullRenderer(t *testing.T) {
	for _, tc := range []struct {
		name, mode string
		want       string // the renderer's type, or "error"
	}{
		{"auto on a buffer is plain", "auto", "*main.plainRenderer"},
		{"plain", "plain", "*main.plainRenderer"},
		{"tty forced", "tty", "*main.ttyRenderer"},
		{"unknown", "fancy", "error"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r, err := newPullRenderer(tc.mode, &bytes.Buffer{})
			got := fmt.Sprintf("%T", r)
			if err != nil {
				got = "error"
			}
			if got != tc.want {
				t.Errorf("newPullRenderer(%q) = %s (%v), want %s", tc.mode, got, err, tc.want)
			}
		})
	}
}

// openPTY opens a pseudo-terminal of the given width and returns its
// controlling side (what the terminal shows is read there) and its terminal
// side (for the program's output).
func openPTY(t *testing.T, cols uint16) (ptmx, pts *os.File) {
	t.Helper()
	ptmx, err := os.OpenFile("/dev/ptmx", os.O_RDWR, 0)
	if err != nil {
		t.Skipf("no pseudo-terminals: %v", err)
	}
	t.Cleanup(func() { ptmx.Close() })
	if err := unix.IoctlSetPointerInt(int(ptmx.Fd()), unix.TIOCSPTLCK, 0); err != nil {
		t.Fatal(err)
	}
	n, err := unix.IoctlGetInt(int(ptmx.Fd()), unix.TIOCGPTN)
	if err != nil {
		t.Fatal(err)
	}
	pts, err = os.OpenFile(fmt.Sprintf("/dev/pts/%d", n), os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pts.Close() })
	if err := unix.IoctlSetWinsize(int(pts.Fd()), unix.TIOCSWINSZ, &unix.Winsize{Col: cols, Row: 24}); err != nil {
		t.Fatal(err)
	}
	return ptmx, pts
}

func TestTerminalWidth(t *testing.T) {
	pr, pw, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer pr.Close()
	defer pw.Close()
	file, err := os.Create(filepath.Join(t.TempDir(), "out"))
	if err != nil {
		t.Fatal(err)
	}
	defer file.Close()
	_, pts := openPTY(t, 77)
	for _, tc := range []struct {
		name     string
		w        io.Writer
		width    int
		height   int
		terminal bool
		renderer string // what auto picks
	}{
		{"pseudo-terminal", pts, 77, 24, true, "*main.ttyRenderer"},
		{"pipe", pw, 0, 0, false, "*main.plainRenderer"},
		{"file", file, 0, 0, false, "*main.plainRenderer"},
		{"buffer", &bytes.Buffer{}, 0, 0, false, "*main.plainRenderer"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			width, height, terminal := terminalSize(tc.w)
			if width != tc.width || height != tc.height || terminal != tc.terminal {
				t.Errorf("terminalSize = %d, %d, %v; want %d, %d, %v", width, height, terminal, tc.width, tc.height, tc.terminal)
			}
			r, err := newPullRenderer("auto", tc.w)
			if got := fmt.Sprintf("%T", r); err != nil || got != tc.renderer {
				t.Errorf("auto renderer %s (%v), want %s", got, err, tc.renderer)
			}
			if tty, ok := r.(*ttyRenderer); ok && (tty.width != tc.width || tty.height != tc.height) {
				t.Errorf("tty renderer of %dx%d, want %dx%d", tty.width, tty.height, tc.width, tc.height)
			}
		})
	}
}

// fakeStore is the part of a content store the tracker uses.
type fakeStore struct {
	content.Store
	blobs    map[digest.Digest][]byte
	statuses []content.Status
}

func (s *fakeStore) ListStatuses(context.Context, ...string) ([]content.Status, error) {
	return s.statuses, nil
}

func (s *fakeStore) ReaderAt(_ context.Context, desc ocispec.Descriptor) (content.ReaderAt, error) {
	b, ok := s.blobs[desc.Digest]
	if !ok {
		return nil, fmt.Errorf("blob %s: %w", desc.Digest, errdefs.ErrNotFound)
	}
	return readerAt{bytes.NewReader(b)}, nil
}

type readerAt struct{ *bytes.Reader }

func (readerAt) Close() error { return nil }

// fakeSnapshotter answers Stat from infos.
type fakeSnapshotter struct {
	snapshots.Snapshotter
	infos map[string]snapshots.Info
}

func (s *fakeSnapshotter) Stat(_ context.Context, key string) (snapshots.Info, error) {
	if info, ok := s.infos[key]; ok {
		return info, nil
	}
	return snapshots.Info{}, fmt.Errorf("snapshot %s: %w", key, errdefs.ErrNotFound)
}

// TestPullTracker drives the tracker's handler wrapper the way containerd's
// unpacker does and checks what poll reports at each step.
func TestPullTracker(t *testing.T) {
	ctx := context.Background()
	diffIDs := []digest.Digest{digest.FromString("diff a"), digest.FromString("diff b")}
	chain := identity.ChainIDs(append([]digest.Digest(nil), diffIDs...))
	cfg, _ := json.Marshal(ocispec.Image{RootFS: ocispec.RootFS{Type: "layers", DiffIDs: diffIDs}})
	cfgDesc := ocispec.Descriptor{MediaType: ocispec.MediaTypeImageConfig, Digest: digest.FromBytes(cfg), Size: int64(len(cfg))}
	la := ocispec.Descriptor{MediaType: ocispec.MediaTypeImageLayerGzip, Digest: testDigestA, Size: 100}
	lb := ocispec.Descriptor{MediaType: ocispec.MediaTypeImageLayerGzip, Digest: testDigestB, Size: 200}
	manifest := ocispec.Descriptor{MediaType: ocispec.MediaTypeImageManifest, Digest: digest.FromString("manifest")}

	cs := &fakeStore{blobs: map[digest.Digest][]byte{}}
	sn := &fakeSnapshotter{infos: map[string]snapshots.Info{}}
	tr := newPullTracker()
	// the wrapped handler: a manifest has the config and layers as children;
	// a blob handled is in the store; release lets a layer "download" finish
	release := map[digest.Digest]chan error{la.Digest: make(chan error), lb.Digest: make(chan error)}
	h := tr.wrap(images.HandlerFunc(func(ctx context.Context, desc ocispec.Descriptor) ([]ocispec.Descriptor, error) {
		switch {
		case desc.Digest == manifest.Digest:
			return []ocispec.Descriptor{cfgDesc, la, lb}, nil
		case desc.Digest == cfgDesc.Digest:
			cs.blobs[cfgDesc.Digest] = cfg
		default:
			if err := <-release[desc.Digest]; err != nil {
				return nil, err
			}
		}
		return nil, nil
	}))
	handle := func(d ocispec.Descriptor) chan error {
		done := make(chan error, 1)
		go func() { _, err := h.Handle(ctx, d); done <- err }()
		return done
	}
	want := func(step string, states ...pullLayer) {
		t.Helper()
		got := tr.poll(ctx, cs, sn)
		if fmt.Sprint(got) != fmt.Sprint(states) {
			t.Fatalf("%s: poll = %v, want %v", step, got, states)
		}
	}
	layer := func(d ocispec.Descriptor, s pullState, done int64) pullLayer {
		return pullLayer{Digest: d.Digest, Size: d.Size, State: s, Done: done}
	}

	want("before the manifest")
	if err := <-handle(manifest); err != nil {
		t.Fatal(err)
	}
	want("manifest known", layer(la, pullWaiting, 0), layer(lb, pullWaiting, 0))
	if err := <-handle(cfgDesc); err != nil {
		t.Fatal(err)
	}
	want("config read", layer(la, pullWaiting, 0), layer(lb, pullWaiting, 0))

	// layer a is fetched (the fallback); layer b is mounted lazily
	doneA := handle(la)
	waitFor(t, func() bool { return tr.poll(ctx, cs, sn)[0].State == pullDownloading })
	want("a requested", layer(la, pullDownloading, 0), layer(lb, pullWaiting, 0))
	cs.statuses = []content.Status{{Ref: "layer-" + la.Digest.String(), Offset: 40, Total: 100}}
	want("a downloading", layer(la, pullDownloading, 40), layer(lb, pullWaiting, 0))
	cs.statuses = nil
	release[la.Digest] <- nil
	if err := <-doneA; err != nil {
		t.Fatal(err)
	}
	want("a downloaded", layer(la, pullUnpacking, 0), layer(lb, pullWaiting, 0))
	sn.infos[chain[0].String()] = snapshots.Info{Name: chain[0].String()}
	sn.infos[chain[1].String()] = snapshots.Info{Name: chain[1].String(), Labels: map[string]string{snapshotter.LabelRemote: snapshotter.RemoteValue}}
	want("both snapshots", layer(la, pullUnpacked, 0), layer(lb, pullLazy, 0))
	delete(sn.infos, chain[1].String())
	want("final states stick", layer(la, pullUnpacked, 0), layer(lb, pullLazy, 0))

	// a failed fetch is no longer shown as downloading
	tr2 := newPullTracker()
	tr2.layers = []ocispec.Descriptor{la, lb}
	h = tr2.wrap(images.HandlerFunc(func(ctx context.Context, desc ocispec.Descriptor) ([]ocispec.Descriptor, error) {
		return nil, errors.New("registry down")
	}))
	if _, err := h.Handle(ctx, lb); err == nil {
		t.Fatal("the wrapper swallowed the handler's error")
	}
	if got := tr2.poll(ctx, cs, sn); got[1].State != pullWaiting {
		t.Errorf("after a failed fetch: %v, want waiting", got[1])
	}
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	for range 1000 {
		if cond() {
			return
		}
		time.Sleep(time.Millisecond)
	}
	t.Fatal("condition not reached")
}
