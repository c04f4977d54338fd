package main

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/lazysnap/lazysnap/internal/testenv"
	"github.com/lazysnap/lazysnap/ops"
	"github.com/lazysnap/lazysnap/pull"
	"github.com/opencontainers/go-digest"
	"golang.org/x/sys/unix"
)

var (
	testDigestA = digest.FromString("layer a")
	testDigestB = digest.FromString("layer b")
)

func TestFormatPullLayer(t *testing.T) {
	short := ops.ShortDigest(testDigestA.String())
	for _, tc := range []struct {
		name  string
		layer pull.Layer
		want  string
	}{
		{"waiting", pull.Layer{Digest: testDigestA, Size: 3 << 20}, "layer 0 " + short + "    3.0 MiB  waiting"},
		{"downloading", pull.Layer{Digest: testDigestA, Size: 24 << 20, State: pull.Downloading, Done: 6 << 20},
			"layer 0 " + short + "   24.0 MiB  downloading 6.0 MiB / 24.0 MiB (25%)"},
		{"downloading, nothing yet", pull.Layer{Digest: testDigestA, Size: 100, State: pull.Downloading},
			"layer 0 " + short + "      100 B  downloading 0 B / 100 B (0%)"},
		{"unpacking", pull.Layer{Digest: testDigestA, Size: 2048, State: pull.Unpacking}, "layer 0 " + short + "    2.0 KiB  downloaded, unpacking"},
		{"unpacked", pull.Layer{Digest: testDigestA, Size: 2048, State: pull.Unpacked}, "layer 0 " + short + "    2.0 KiB  unpacked"},
		{"lazy", pull.Layer{Digest: testDigestA, Size: 1 << 30, State: pull.Lazy}, "layer 0 " + short + "    1.0 GiB  lazy (remote snapshot)"},
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

func dl(d digest.Digest, done int64) pull.Layer {
	return pull.Layer{Digest: d, Size: 100, State: pull.Downloading, Done: done}
}

func st(d digest.Digest, s pull.State) pull.Layer { return pull.Layer{Digest: d, Size: 100, State: s} }

func TestPlainRenderer(t *testing.T) {
	line := func(i int, l pull.Layer) string { return formatPullLayer(i, l) + "\n" }
	for _, tc := range []struct {
		name    string
		updates [][]pull.Layer
		want    string
	}{
		{"nothing known yet", [][]pull.Layer{nil, nil}, ""},
		{"new waiting layers print nothing", [][]pull.Layer{{st(testDigestA, pull.Waiting), st(testDigestB, pull.Waiting)}}, ""},
		{"lazy layers: one line each",
			[][]pull.Layer{
				{st(testDigestA, pull.Waiting), st(testDigestB, pull.Waiting)},
				{st(testDigestA, pull.Lazy), st(testDigestB, pull.Waiting)},
				{st(testDigestA, pull.Lazy), st(testDigestB, pull.Lazy)},
				{st(testDigestA, pull.Lazy), st(testDigestB, pull.Lazy)},
			},
			line(0, st(testDigestA, pull.Lazy)) + line(1, st(testDigestB, pull.Lazy))},
		{"download: start, quarters, unpack",
			[][]pull.Layer{
				{dl(testDigestA, 0)},
				{dl(testDigestA, 10)},
				{dl(testDigestA, 26)},
				{dl(testDigestA, 40)},
				{dl(testDigestA, 99)},
				{st(testDigestA, pull.Unpacking)},
				{st(testDigestA, pull.Unpacked)},
			},
			line(0, dl(testDigestA, 0)) + line(0, dl(testDigestA, 26)) + line(0, dl(testDigestA, 99)) +
				line(0, st(testDigestA, pull.Unpacking)) + line(0, st(testDigestA, pull.Unpacked))},
		{"a layer seen first mid-download",
			[][]pull.Layer{{dl(testDigestA, 60)}},
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
	a0, a50, bl := formatPullLayer(0, dl(testDigestA, 0)), formatPullLayer(0, dl(testDigestA, 50)), formatPullLayer(1, st(testDigestB, pull.Lazy))
	for _, tc := range []struct {
		name    string
		width   int
		height  int
		updates [][]pull.Layer
		want    string
	}{
		{"nothing to draw", 80, 24, [][]pull.Layer{nil}, ""},
		{"first frame, then redrawn in place",
			80, 24,
			[][]pull.Layer{{dl(testDigestA, 0)}, {dl(testDigestA, 50), st(testDigestB, pull.Lazy)}},
			"\r\x1b[2K" + a0 + "\n" +
				"\x1b[1A" + "\r\x1b[2K" + a50 + "\n" + "\r\x1b[2K" + bl + "\n" +
				"\x1b[2A\r\x1b[J"},
		{"an unchanged frame is not redrawn",
			80, 24,
			[][]pull.Layer{{dl(testDigestA, 0)}, {dl(testDigestA, 0)}},
			"\r\x1b[2K" + a0 + "\n" + "\x1b[1A\r\x1b[J"},
		{"lines are cut to the width",
			20, 24,
			[][]pull.Layer{{dl(testDigestA, 0)}},
			"\r\x1b[2K" + a0[:19] + "\n" + "\x1b[1A\r\x1b[J"},
		{"more layers than rows: those in progress and a count",
			80, 3,
			[][]pull.Layer{{st(testDigestA, pull.Lazy), dl(testDigestA, 0), st(testDigestB, pull.Unpacked), dl(testDigestB, 50)}},
			"\r\x1b[2K" + formatPullLayer(1, dl(testDigestA, 0)) + "\n" +
				"\r\x1b[2Kand 3 more layers; 2 of 4 done\n" + "\x1b[2A\r\x1b[J"},
		{"as many layers as fit",
			80, 3,
			[][]pull.Layer{{st(testDigestA, pull.Lazy), dl(testDigestA, 0)}},
			"\r\x1b[2K" + formatPullLayer(0, st(testDigestA, pull.Lazy)) + "\n" +
				"\r\x1b[2K" + formatPullLayer(1, dl(testDigestA, 0)) + "\n" + "\x1b[2A\r\x1b[J"},
		{"unknown size: neither cut nor left out",
			0, 0,
			[][]pull.Layer{{dl(testDigestA, 0)}},
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
func render(t *testing.T, r pullRenderer, updates [][]pull.Layer) {
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
		testenv.Unavailable(t, "no pseudo-terminals: %v", err)
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
