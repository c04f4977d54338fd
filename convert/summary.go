package convert

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"strings"
	"time"
)

// WriteSummary writes what the conversion did, which took took: the
// registry pull, a line on the layers and their bytes, the push.
func (r *Report) WriteSummary(w io.Writer, took time.Duration) error {
	var in, out int64
	converted := 0
	for _, l := range r.Layers {
		in += l.From.Size
		out += l.To.Size
		if l.Result != nil {
			converted++
		}
	}
	return writeSummary(w, r.Pull, r.Push, fmt.Sprintf("converted %d of %d layers in %d manifests: %d -> %d bytes in %s",
		converted, len(r.Layers), r.Manifests, in, out, took.Round(time.Millisecond)))
}

// WriteSummary writes what the indexing did, which took took: the
// registry pull, a line on the layers indexed, their zTOCs and the new
// image index, the push.
func (r *IndexReport) WriteSummary(w io.Writer, took time.Duration) error {
	var in, out int64
	n := 0
	for _, l := range r.Layers {
		if l.Ztoc != nil {
			n++
			in += l.Layer.Size
			out += l.Ztoc.Size
		}
	}
	return writeSummary(w, r.Pull, r.Push, fmt.Sprintf("indexed %d of %d layers in %d manifests: %d bytes of layers, %d bytes of zTOCs, in %s; image index %s",
		n, len(r.Layers), r.Manifests, in, out, took.Round(time.Millisecond), r.Root.Digest))
}

// writeSummary writes the pull's line, line, and the push's line.
func writeSummary(w io.Writer, pull *PullReport, push *PushReport, line string) error {
	if pull != nil {
		if _, err := fmt.Fprintf(w, "pulled %s: %d blobs, %d bytes\n", pull.Ref, pull.Blobs, pull.Bytes); err != nil {
			return err
		}
	}
	if _, err := fmt.Fprintln(w, line); err != nil {
		return err
	}
	if push != nil {
		_, err := fmt.Fprintf(w, "pushed %s: %d uploaded (%d bytes), %d already in the registry\n", push.Ref, push.Uploaded, push.UploadedBytes, push.Existing)
		return err
	}
	return nil
}

// ReadPrioritized reads a list of prioritized files (Options.Prioritized)
// from the file at path: a path a line; blank lines and lines starting
// with "#" are skipped, and surrounding spaces trimmed.
func ReadPrioritized(path string) ([]string, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if l := strings.TrimSpace(sc.Text()); l != "" && !strings.HasPrefix(l, "#") {
			out = append(out, l)
		}
	}
	return out, sc.Err()
}
