package pull

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
	"github.com/opencontainers/go-digest"
)

var (
	testDigestA = digest.FromString("layer a")
	testDigestB = digest.FromString("layer b")
)

func TestFormatLayer(t *testing.T) {
	short := ops.ShortDigest(testDigestA.String())
	for _, tc := range []struct {
		name  string
		layer Layer
		want  string
	}{
		{"waiting", Layer{Digest: testDigestA, Size: 3 << 20}, "layer 0 " + short + "    3.0 MiB  waiting"},
		{"downloading", Layer{Digest: testDigestA, Size: 24 << 20, State: Downloading, Done: 6 << 20},
			"layer 0 " + short + "   24.0 MiB  downloading 6.0 MiB / 24.0 MiB (25%)"},
		{"downloading, nothing yet", Layer{Digest: testDigestA, Size: 100, State: Downloading},
			"layer 0 " + short + "      100 B  downloading 0 B / 100 B (0%)"},
		{"unpacking", Layer{Digest: testDigestA, Size: 2048, State: Unpacking}, "layer 0 " + short + "    2.0 KiB  downloaded, unpacking"},
		{"unpacked", Layer{Digest: testDigestA, Size: 2048, State: Unpacked}, "layer 0 " + short + "    2.0 KiB  unpacked"},
		{"lazy", Layer{Digest: testDigestA, Size: 1 << 30, State: Lazy}, "layer 0 " + short + "    1.0 GiB  lazy (remote snapshot)"},
		{"pulling at line rate, bytes unknown", Layer{Digest: testDigestA, Size: 8 << 20, State: PullingLineRate},
			"layer 0 " + short + "    8.0 MiB  not lazy, pulling at line rate"},
		{"pulling at line rate", Layer{Digest: testDigestA, Size: 8 << 20, State: PullingLineRate, Done: 2 << 20},
			"layer 0 " + short + "    8.0 MiB  not lazy, pulling at line rate 2.0 MiB / 8.0 MiB (25%)"},
		{"pulled at line rate", Layer{Digest: testDigestA, Size: 8 << 20, State: LineRate}, "layer 0 " + short + "    8.0 MiB  not lazy, pulled at line rate"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := FormatLayer(0, tc.layer); got != tc.want {
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

func dl(d digest.Digest, done int64) Layer {
	return Layer{Digest: d, Size: 100, State: Downloading, Done: done}
}

func st(d digest.Digest, s State) Layer { return Layer{Digest: d, Size: 100, State: s} }

func TestPlainRenderer(t *testing.T) {
	line := func(i int, l Layer) string { return FormatLayer(i, l) + "\n" }
	for _, tc := range []struct {
		name    string
		updates [][]Layer
		want    string
	}{
		{"nothing known yet", [][]Layer{nil, nil}, ""},
		{"new waiting layers print nothing", [][]Layer{{st(testDigestA, Waiting), st(testDigestB, Waiting)}}, ""},
		{"lazy layers: one line each",
			[][]Layer{
				{st(testDigestA, Waiting), st(testDigestB, Waiting)},
				{st(testDigestA, Lazy), st(testDigestB, Waiting)},
				{st(testDigestA, Lazy), st(testDigestB, Lazy)},
				{st(testDigestA, Lazy), st(testDigestB, Lazy)},
			},
			line(0, st(testDigestA, Lazy)) + line(1, st(testDigestB, Lazy))},
		{"download: start, quarters, unpack",
			[][]Layer{
				{dl(testDigestA, 0)},
				{dl(testDigestA, 10)},
				{dl(testDigestA, 26)},
				{dl(testDigestA, 40)},
				{dl(testDigestA, 99)},
				{st(testDigestA, Unpacking)},
				{st(testDigestA, Unpacked)},
			},
			line(0, dl(testDigestA, 0)) + line(0, dl(testDigestA, 26)) + line(0, dl(testDigestA, 99)) +
				line(0, st(testDigestA, Unpacking)) + line(0, st(testDigestA, Unpacked))},
		{"a layer seen first mid-download",
			[][]Layer{{dl(testDigestA, 60)}},
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
	a0, a50, bl := FormatLayer(0, dl(testDigestA, 0)), FormatLayer(0, dl(testDigestA, 50)), FormatLayer(1, st(testDigestB, Lazy))
	for _, tc := range []struct {
		name    string
		width   int
		height  int
		updates [][]Layer
		want    string
	}{
		{"nothing to draw", 80, 24, [][]Layer{nil}, ""},
		{"first frame, then redrawn in place",
			80, 24,
			[][]Layer{{dl(testDigestA, 0)}, {dl(testDigestA, 50), st(testDigestB, Lazy)}},
			"\r\x1b[2K" + a0 + "\n" +
				"\x1b[1A" + "\r\x1b[2K" + a50 + "\n" + "\r\x1b[2K" + bl + "\n" +
				"\x1b[2A\r\x1b[J"},
		{"an unchanged frame is not redrawn",
			80, 24,
			[][]Layer{{dl(testDigestA, 0)}, {dl(testDigestA, 0)}},
			"\r\x1b[2K" + a0 + "\n" + "\x1b[1A\r\x1b[J"},
		{"lines are cut to the width",
			20, 24,
			[][]Layer{{dl(testDigestA, 0)}},
			"\r\x1b[2K" + a0[:19] + "\n" + "\x1b[1A\r\x1b[J"},
		{"more layers than rows: those in progress and a count",
			80, 3,
			[][]Layer{{st(testDigestA, Lazy), dl(testDigestA, 0), st(testDigestB, Unpacked), dl(testDigestB, 50)}},
			"\r\x1b[2K" + FormatLayer(1, dl(testDigestA, 0)) + "\n" +
				"\r\x1b[2Kand 3 more layers; 2 of 4 done\n" + "\x1b[2A\r\x1b[J"},
		{"as many layers as fit",
			80, 3,
			[][]Layer{{st(testDigestA, Lazy), dl(testDigestA, 0)}},
			"\r\x1b[2K" + FormatLayer(0, st(testDigestA, Lazy)) + "\n" +
				"\r\x1b[2K" + FormatLayer(1, dl(testDigestA, 0)) + "\n" + "\x1b[2A\r\x1b[J"},
		{"unknown size: neither cut nor left out",
			0, 0,
			[][]Layer{{dl(testDigestA, 0)}},
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
func render(t *testing.T, r Renderer, updates [][]Layer) {
	t.Helper()
	for _, u := range updates {
		if err := r.Update(u); err != nil {
			t.Fatal(err)
		}
	}
	if err := r.Finish(); err != nil {
		t.Fatal(err)
	}
}

func TestNewRenderer(t *testing.T) {
	for _, tc := range []struct {
		name, mode string
		want       string // the renderer's type, or "error"
	}{
		{"auto on a buffer is plain", "auto", "*pull.plainRenderer"},
		{"plain", "plain", "*pull.plainRenderer"},
		{"tty forced", "tty", "*pull.ttyRenderer"},
		{"unknown", "fancy", "error"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r, err := NewRenderer(tc.mode, &bytes.Buffer{})
			got := fmt.Sprintf("%T", r)
			if err != nil {
				got = "error"
			}
			if got != tc.want {
				t.Errorf("NewRenderer(%q) = %s (%v), want %s", tc.mode, got, err, tc.want)
			}
		})
	}
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
	_, pts := testenv.OpenPTY(t, 77)
	for _, tc := range []struct {
		name     string
		w        io.Writer
		width    int
		height   int
		terminal bool
		renderer string // what auto picks
	}{
		{"pseudo-terminal", pts, 77, 24, true, "*pull.ttyRenderer"},
		{"pipe", pw, 0, 0, false, "*pull.plainRenderer"},
		{"file", file, 0, 0, false, "*pull.plainRenderer"},
		{"buffer", &bytes.Buffer{}, 0, 0, false, "*pull.plainRenderer"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			width, height, terminal := terminalSize(tc.w)
			if width != tc.width || height != tc.height || terminal != tc.terminal {
				t.Errorf("terminalSize = %d, %d, %v; want %d, %d, %v", width, height, terminal, tc.width, tc.height, tc.terminal)
			}
			r, err := NewRenderer("auto", tc.w)
			if got := fmt.Sprintf("%T", r); err != nil || got != tc.renderer {
				t.Errorf("auto renderer %s (%v), want %s", got, err, tc.renderer)
			}
			if tty, ok := r.(*ttyRenderer); ok && (tty.width != tc.width || tty.height != tc.height) {
				t.Errorf("tty renderer of %dx%d, want %dx%d", tty.width, tty.height, tc.width, tc.height)
			}
		})
	}
}
