package pull

// Live progress of `lazysnap pull`: two renderers of what the tracker
// sees, one that redraws a block of lines in place on a terminal, one that
// prints a line per event for logs; and the summary after the pull.

import (
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/lazysnap/lazysnap/ops"
	"golang.org/x/sys/unix"
)

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

// FormatLayer is layer i's line in the progress display.
func FormatLayer(i int, l Layer) string {
	head := fmt.Sprintf("layer %d %s %10s  ", i, ops.ShortDigest(l.Digest.String()), ops.HumanBytes(l.Size))
	switch {
	case l.State == Downloading:
		return head + fmt.Sprintf("downloading %s / %s (%d%%)", ops.HumanBytes(l.Done), ops.HumanBytes(l.Size), percent(l.Done, l.Size))
	case l.State == PullingLineRate && l.Done > 0:
		return head + fmt.Sprintf("%s %s / %s (%d%%)", l.State, ops.HumanBytes(l.Done), ops.HumanBytes(l.Size), percent(l.Done, l.Size))
	}
	return head + l.State.String()
}

// Renderer shows successive snapshots of a pull's layers
// (Options.Progress).
type Renderer interface {
	Update(layers []Layer) error
	// Finish is called once after the last Update, before the summary.
	Finish() error
}

// plainRenderer prints a line when a layer changes state, and while it
// downloads each time another quarter of it has arrived: readable in logs.
type plainRenderer struct {
	w    io.Writer
	last []Layer
}

func (r *plainRenderer) Update(layers []Layer) error {
	for i, l := range layers {
		if i < len(r.last) && !plainEvent(r.last[i], l) {
			continue
		}
		if i >= len(r.last) && l.State == Waiting {
			continue // a new layer that nothing happened to yet
		}
		if _, err := fmt.Fprintln(r.w, FormatLayer(i, l)); err != nil {
			return err
		}
	}
	r.last = append(r.last[:0], layers...)
	return nil
}

// plainEvent reports whether going from prev to cur is worth a line.
func plainEvent(prev, cur Layer) bool {
	if prev.State != cur.State {
		return true
	}
	return (cur.State == Downloading || cur.State == PullingLineRate) && percent(cur.Done, cur.Size)/25 > percent(prev.Done, prev.Size)/25
}

func (r *plainRenderer) Finish() error { return nil }

// ttyRenderer redraws one line per layer in place with ANSI cursor
// movement; finish erases them so that the summary takes their place.
type ttyRenderer struct {
	w      io.Writer
	width  int // columns; lines are cut to fit so that none wraps (0: unknown)
	height int // rows; a frame has fewer, or the cursor could not go back up (0: unknown)
	lines  int // lines drawn by the last update
	frame  string
}

func (r *ttyRenderer) Update(layers []Layer) error {
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
func frameLines(layers []Layer, max int) []string {
	var lines []string
	if max < 1 || len(layers) <= max {
		for i, l := range layers {
			lines = append(lines, FormatLayer(i, l))
		}
		return lines
	}
	done := 0
	for i, l := range layers {
		if l.State.Final() {
			done++
		} else if len(lines) < max-1 {
			lines = append(lines, FormatLayer(i, l))
		}
	}
	return append(lines, fmt.Sprintf("and %d more layers; %d of %d done", len(layers)-len(lines), done, len(layers)))
}

func (r *ttyRenderer) Finish() error {
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

// ErrMode is NewRenderer's error for a mode it does not know.
var ErrMode = errors.New("pull: unknown progress mode")

// NewRenderer picks the renderer for mode: "tty", "plain", or "auto"
// (tty when w is a terminal).
func NewRenderer(mode string, w io.Writer) (Renderer, error) {
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
	return nil, fmt.Errorf("%w %q (want auto, tty or plain)", ErrMode, mode)
}

// WriteSummary writes each layer's final state (unless quiet) and a line on
// the whole pull.
func WriteSummary(w io.Writer, res Result, quiet bool) error {
	for i, l := range res.Layers {
		if quiet {
			break
		}
		name := res.DiffIDs[i].String()
		if l.Digest != "" {
			name = fmt.Sprintf("%s (%d bytes)", l.Digest, l.Size)
		}
		if _, err := fmt.Fprintf(w, "layer %d: %s: %s\n", i, name, l.State); err != nil {
			return err
		}
	}
	lr := ""
	if n := res.LineRateLayers(); n > 0 {
		lr = fmt.Sprintf(", %d pulled at line rate", n)
	}
	_, err := fmt.Fprintf(w, "pulled %s in %s: %d of %d layers lazy%s\n", res.Image.Name(), res.Took.Round(time.Millisecond), res.LazyLayers(), len(res.Layers), lr)
	return err
}
