package estargz_test

import (
	"slices"
	"testing"

	refestargz "github.com/containerd/stargz-snapshotter/estargz"
	"github.com/lazysnap/lazysnap/estargz"
	"github.com/lazysnap/lazysnap/internal/testformat"
	"github.com/lazysnap/lazysnap/internal/testtar"
)

// TestFormat runs the format conformance suite on eStargz layers.
func TestFormat(t *testing.T) {
	testformat.Run(t, testformat.Case{Format: estargz.Format{}, Writer: estargz.Writer{}})
}

// TestWriter runs the writer suite on estargz.Writer, and checks what it
// writes beyond it: the reference library opens and verifies the blob as
// the tar, as does this package's Reader (every entry's metadata); its
// tar is an ordinary one with the TOC as an entry; the landmark entry
// says where the prioritized files end.
func TestWriter(t *testing.T) {
	testformat.RunWriter(t, testformat.WriterCase{Writer: estargz.Writer{}, Format: estargz.Format{},
		Decompress: func(b []byte) ([]byte, error) { return gunzipAll(t, b), nil },
		Check: func(t *testing.T, w testformat.Wrote) {
			ref, err := refestargz.Open(sectionOf(w.Out))
			if err != nil {
				t.Fatalf("reference Open: %v", err)
			}
			if ref.TOCDigest() != w.Written.TOCDigest {
				t.Errorf("reference TOC digest %s, ours %s", ref.TOCDigest(), w.Written.TOCDigest)
			}
			v, err := ref.VerifyTOC(w.Written.TOCDigest)
			if err != nil {
				t.Fatalf("reference VerifyTOC: %v", err)
			}
			testformat.ReferenceReads(t, ref, v, w.Src)

			r, err := estargz.Open(sectionOf(w.Out), estargz.WithTOCDigest(w.Written.TOCDigest))
			if err != nil {
				t.Fatalf("Open: %v", err)
			}
			compareWithSource(t, r, w.Src)
			unpacked, err := testtar.Read(gunzipAll(t, w.Out))
			if err != nil {
				t.Fatalf("uncompressed blob is not a tar: %v", err)
			}
			for name := range w.Src {
				if _, ok := unpacked[name]; !ok {
					t.Errorf("uncompressed tar lacks %q", name)
				}
			}
			if _, ok := unpacked[estargz.TOCTarName]; !ok {
				t.Errorf("uncompressed tar lacks the TOC")
			}
			checkLandmark(t, r, w.Opts.Prioritized != nil)
		}})
}

// checkLandmark: the landmark entry comes first when nothing was
// prioritized, and right after the prioritized files (and their
// directories) when some were, where the TOC's PrefetchEnd says.
func checkLandmark(t *testing.T, r *estargz.Reader, prioritized bool) {
	t.Helper()
	var names []string
	for _, e := range r.TOC().Entries {
		if !e.Implicit && e.Name != "" {
			names = append(names, e.Name)
		}
	}
	if !prioritized {
		if names[0] != estargz.NoPrefetchLandmark || r.TOC().PrefetchEnd != 0 {
			t.Errorf("first entry %q, want %q", names[0], estargz.NoPrefetchLandmark)
		}
		return
	}
	want := []string{"usr", "usr/bin", "usr/bin/tool", "usr/bin/tool-link2", "etc", "etc/hostname", "big", estargz.PrefetchLandmark}
	if len(names) < len(want) || !slices.Equal(names[:len(want)], want) {
		t.Fatalf("entry order %q, want the prefix %q", names[:min(len(names), len(want))], want)
	}
	lm, _ := r.Lookup(estargz.PrefetchLandmark)
	big, _ := r.Lookup("big")
	if pe := r.TOC().PrefetchEnd; pe != lm.Chunks[0].Offset || pe <= big.Chunks[len(big.Chunks)-1].Offset {
		t.Errorf("PrefetchEnd %d does not follow the prioritized files", pe)
	}
}
