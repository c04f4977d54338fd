package soci_test

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"testing"

	"github.com/lazysnap/lazysnap/internal/testenv/socipeer"
	"github.com/lazysnap/lazysnap/soci"
)

// TestPeerReadsOurZtocs: zTOCs built here are read by soci's own ztoc
// package (awslabs/soci-snapshotter v0.16.1, through soci-peer): it lists
// the same entries and extracts every regular file, span by span from the
// checkpoints, with the bytes the layer holds.
func TestPeerReadsOurZtocs(t *testing.T) {
	peer := socipeer.Binary(t)
	files := sampleFiles()
	blob := makeLayer(t, files)
	for _, span := range []int64{64 << 10, soci.DefaultSpanSize} {
		z, err := soci.Build(bytes.NewReader(blob), soci.BuildOptions{SpanSize: span})
		if err != nil {
			t.Fatal(err)
		}
		dir := t.TempDir()
		zp, bp := filepath.Join(dir, "ztoc"), filepath.Join(dir, "blob")
		os.WriteFile(zp, soci.Marshal(z), 0o644)
		os.WriteFile(bp, blob, 0o644)
		ls := peerLines(t, peer, "ls", zp)
		if len(ls) != len(z.Files) {
			t.Fatalf("span %d: soci lists %d entries, we wrote %d", span, len(ls), len(z.Files))
		}
		for i, e := range ls {
			f := z.Files[i]
			if e["name"] != f.Name || e["type"] != f.Type || int64(e["offset"].(float64)) != f.Offset || int64(e["size"].(float64)) != f.Size ||
				int(e["spans"].(float64)) != len(z.SpanDigests) {
				t.Fatalf("span %d: soci reads entry %d as %v, we wrote %+v", span, i, e, f)
			}
		}
		want := map[string]string{}
		for _, f := range files {
			if f.typ == '0' {
				sum := sha256.Sum256(f.data)
				want[f.name] = hex.EncodeToString(sum[:])
			}
		}
		got := peerLines(t, peer, "extract", zp, bp)
		if len(got) != len(want) {
			t.Fatalf("span %d: soci extracted %d files, want %d", span, len(got), len(want))
		}
		for _, e := range got {
			if want[e["name"].(string)] != e["sha256"] {
				t.Fatalf("span %d: soci extracted %s with sha256 %s, want %s", span, e["name"], e["sha256"], want[e["name"].(string)])
			}
		}
	}
}

func peerLines(t *testing.T, peer string, args ...string) []map[string]any {
	t.Helper()
	out, err := exec.Command(peer, args...).Output()
	if err != nil {
		var stderr []byte
		if ee, ok := err.(*exec.ExitError); ok {
			stderr = ee.Stderr
		}
		t.Fatalf("soci-peer %v: %v\n%s", args, err, stderr)
	}
	var lines []map[string]any
	sc := bufio.NewScanner(bytes.NewReader(out))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		var m map[string]any
		if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
			t.Fatal(err)
		}
		lines = append(lines, m)
	}
	return lines
}

// TestWeReadPeerZtocs: zTOCs built by soci's own ztoc.Builder (cgo zlib)
// are read here: the same entries, spans and checkpoints as ours of the
// same blob (soci's inflater and ours choose the same block boundaries),
// and every file extracted from soci's checkpoints with the layer's bytes.
func TestWeReadPeerZtocs(t *testing.T) {
	peer := socipeer.Binary(t)
	files := sampleFiles()
	blob := makeLayer(t, files)
	for _, span := range []int64{64 << 10, soci.DefaultSpanSize} {
		dir := t.TempDir()
		bp, zp := filepath.Join(dir, "blob"), filepath.Join(dir, "ztoc")
		os.WriteFile(bp, blob, 0o644)
		if out, err := exec.Command(peer, "build", bp, strconv.FormatInt(span, 10), zp).CombinedOutput(); err != nil {
			t.Fatalf("soci-peer build: %v\n%s", err, out)
		}
		zb, err := os.ReadFile(zp)
		if err != nil {
			t.Fatal(err)
		}
		var theirs *soci.Ztoc
		got := allocated(func() { theirs, err = soci.Unmarshal(zb, 0) })
		if err != nil {
			t.Fatalf("span %d: soci's zTOC: %v", span, err)
		}
		t.Logf("span %d: soci's zTOC of %d bytes decoded into %d allocated bytes (%.2fx)", span, len(zb), got, withinBound(t, zb, got))
		ours, err := soci.Build(bytes.NewReader(blob), soci.BuildOptions{SpanSize: span})
		if err != nil {
			t.Fatal(err)
		}
		if len(theirs.Files) != len(ours.Files) || theirs.UncompressedSize != ours.UncompressedSize || theirs.CompressedSize != ours.CompressedSize {
			t.Fatalf("span %d: soci: %d entries, %d/%d bytes; ours: %d entries, %d/%d bytes", span, len(theirs.Files),
				theirs.CompressedSize, theirs.UncompressedSize, len(ours.Files), ours.CompressedSize, ours.UncompressedSize)
		}
		if !slices.Equal(theirs.SpanDigests, ours.SpanDigests) {
			t.Fatalf("span %d: soci's %d span digests differ from our %d", span, len(theirs.SpanDigests), len(ours.SpanDigests))
		}
		for i, c := range theirs.Checkpoints.List {
			o := ours.Checkpoints.List[i]
			if c.In != o.In || c.Out != o.Out || c.Bits != o.Bits || !bytes.Equal(c.Window, o.Window) {
				t.Fatalf("span %d: checkpoint %d: soci %d/%d/%d, ours %d/%d/%d (windows equal: %v)", span, i, c.In, c.Out, c.Bits, o.In, o.Out, o.Bits, bytes.Equal(c.Window, o.Window))
			}
		}
		for i, f := range files {
			if got := extract(t, theirs, blob, &theirs.Files[i]); !bytes.Equal(got, f.data) {
				t.Fatalf("span %d: %s extracted from soci's zTOC differs", span, f.name)
			}
		}
	}
}
