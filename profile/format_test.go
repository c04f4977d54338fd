package profile

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/opencontainers/go-digest"
)

var (
	dgA   = digest.FromString("manifest a")
	blobA = digest.FromString("blob a")
	tocA  = digest.FromString("toc a")
)

func sample() *Profile {
	return &Profile{Version: Version, Manifest: dgA, Ref: "example.com/app:1", Layers: []Layer{
		NewLayer(blobA, tocA, []Chunk{{"usr/bin/python3", 0}, {"etc/hostname", 0}, {"usr/bin/python3", 1}}),
	}}
}

func TestParse(t *testing.T) {
	good, err := Marshal(sample())
	if err != nil {
		t.Fatal(err)
	}
	layer := `"digest":"` + blobA.String() + `","toc":"` + tocA.String() + `"`
	for _, tc := range []struct {
		name, in string
		want     error
	}{
		{"good", string(good), nil},
		{"by reference", `{"version":1,"ref":"r:1","layers":[]}`, nil},
		{"version 2", `{"version":2,"manifest":"` + dgA.String() + `","layers":[]}`, ErrInvalid},
		{"no key", `{"version":1,"layers":[]}`, ErrInvalid},
		{"bad manifest digest", `{"version":1,"manifest":"sha256:zz","layers":[]}`, ErrInvalid},
		{"unknown field", `{"version":1,"ref":"r","layers":[],"x":1}`, ErrInvalid},
		{"trailing data", `{"version":1,"ref":"r","layers":[]} {}`, ErrInvalid},
		{"chunk of three", `{"version":1,"ref":"r","layers":[{` + layer + `,"files":["a"],"chunks":[[0,0,0]]}]}`, ErrInvalid},
		{"file out of range", `{"version":1,"ref":"r","layers":[{` + layer + `,"files":["a"],"chunks":[[1,0]]}]}`, ErrInvalid},
		{"negative chunk", `{"version":1,"ref":"r","layers":[{` + layer + `,"files":["a"],"chunks":[[0,-1]]}]}`, ErrInvalid},
		{"chunk twice", `{"version":1,"ref":"r","layers":[{` + layer + `,"files":["a"],"chunks":[[0,0],[0,0]]}]}`, ErrInvalid},
		{"unused file", `{"version":1,"ref":"r","layers":[{` + layer + `,"files":["a","b"],"chunks":[[0,0],[0,1]]}]}`, ErrInvalid},
		{"absolute path", `{"version":1,"ref":"r","layers":[{` + layer + `,"files":["/a"],"chunks":[[0,0]]}]}`, ErrInvalid},
		{"dotdot path", `{"version":1,"ref":"r","layers":[{` + layer + `,"files":["../a"],"chunks":[[0,0]]}]}`, ErrInvalid},
		{"unclean path", `{"version":1,"ref":"r","layers":[{` + layer + `,"files":["a//b"],"chunks":[[0,0]]}]}`, ErrInvalid},
		{"layer twice", `{"version":1,"ref":"r","layers":[{` + layer + `,"files":[],"chunks":[]},{` + layer + `,"files":[],"chunks":[]}]}`, ErrInvalid},
		{"bad toc", `{"version":1,"ref":"r","layers":[{"digest":"` + blobA.String() + `","toc":"x","files":[],"chunks":[]}]}`, ErrInvalid},
		{"too large", `{"version":1,"ref":"` + strings.Repeat("r", MaxBytes) + `"}`, ErrTooLarge},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p, err := Parse([]byte(tc.in))
			if !errors.Is(err, tc.want) || (tc.want == nil) != (err == nil) {
				t.Fatalf("Parse: %v, want %v", err, tc.want)
			}
			if err != nil {
				return
			}
			again, err := Marshal(p)
			if err != nil {
				t.Fatalf("Marshal of a parsed profile: %v", err)
			}
			if p2, err := Parse(again); err != nil || p2.Key() != p.Key() || len(p2.Layers) != len(p.Layers) {
				t.Fatalf("round trip: %v", err)
			}
		})
	}
	p, _ := Parse(good)
	want := []Chunk{{"usr/bin/python3", 0}, {"etc/hostname", 0}, {"usr/bin/python3", 1}}
	if got := p.Layers[0].ChunkList(); !slices.Equal(got, want) {
		t.Fatalf("chunks %v, want %v (first-access order)", got, want)
	}
}

func TestTooManyChunks(t *testing.T) {
	var cs []Chunk
	for i := range MaxChunks + 1 {
		cs = append(cs, Chunk{"f", i})
	}
	p := &Profile{Version: Version, Ref: "r", Layers: []Layer{NewLayer(blobA, tocA, cs)}}
	if _, err := Marshal(p); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("Marshal of %d chunks: %v, want ErrTooLarge", MaxChunks+1, err)
	}
}

func TestStore(t *testing.T) {
	s := NewStore(filepath.Join(t.TempDir(), "profiles"))
	if _, err := s.Get(dgA.String()); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Get from an empty store: %v", err)
	}
	byRef := &Profile{Version: Version, Ref: "example.com/app:1", Layers: []Layer{NewLayer(blobA, tocA, []Chunk{{"a", 0}})}}
	for _, p := range []*Profile{sample(), byRef} {
		if err := s.Put(p); err != nil {
			t.Fatal(err)
		}
		got, err := s.Get(p.Key())
		if err != nil || got.Key() != p.Key() || !slices.Equal(got.Layers[0].ChunkList(), p.Layers[0].ChunkList()) {
			t.Fatalf("Get %s: %+v, %v", p.Key(), got, err)
		}
	}
	if err := os.WriteFile(filepath.Join(s.Dir(), "sha256-"+strings.Repeat("0", 64)+".json"), []byte("{"), 0o600); err != nil {
		t.Fatal(err)
	}
	ps, err := s.List()
	if len(ps) != 2 || !errors.Is(err, ErrInvalid) {
		t.Fatalf("List: %d profiles, %v; want 2 and the damaged file reported", len(ps), err)
	}
	if ents, _ := os.ReadDir(s.Dir()); len(ents) != 3 {
		t.Fatalf("store holds %d files, want 3 (no temporary files left)", len(ents))
	}
	if err := s.Remove(dgA.String()); err != nil {
		t.Fatal(err)
	}
	if err := s.Remove(dgA.String()); !errors.Is(err, ErrNotFound) {
		t.Fatalf("second Remove: %v", err)
	}
}

// TestRecorder: chunks in first-access order across layers, named by the
// layer's Namer; Flush ends the recording once, and later chunks are not
// recorded.
func TestRecorder(t *testing.T) {
	var got []*Profile
	r := NewRecorder(dgA, "ref", Limits{Quiet: 1 << 40, Total: 1 << 40}, func(p *Profile) { got = append(got, p) })
	names := func(inos []uint32) map[uint32]string {
		m := map[uint32]string{}
		for _, i := range inos {
			if i != 99 { // an inode the namer does not know is dropped
				m[i] = "f" + string(rune('0'+i))
			}
		}
		return m
	}
	a := r.Layer(blobA, tocA, names)
	b := r.Layer(digest.FromString("blob b"), tocA, names)
	a.Add(2, 0)
	b.Add(1, 0)
	a.Add(99, 0)
	a.Add(1, 3)
	r.Flush()
	a.Add(3, 0)
	r.Flush()
	if len(got) != 1 {
		t.Fatalf("done called %d times", len(got))
	}
	p := got[0]
	if len(p.Layers) != 2 || !slices.Equal(p.Layers[0].ChunkList(), []Chunk{{"f2", 0}, {"f1", 3}}) || !slices.Equal(p.Layers[1].ChunkList(), []Chunk{{"f1", 0}}) {
		t.Fatalf("recorded %+v", p.Layers)
	}
	if _, err := Marshal(p); err != nil {
		t.Fatal(err)
	}
}
