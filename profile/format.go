package profile

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"path"
	"strings"

	"github.com/opencontainers/go-digest"
)

// Version is the format version this package reads and writes.
const Version = 1

// MediaType is the media type of a profile blob, and the artifactType of
// the OCI artifact that carries it in a registry.
const MediaType = "application/vnd.lazysnap.profile.v1+json"

// Caps on what Parse accepts.
const (
	MaxBytes     = 8 << 20 // encoded profile
	MaxChunks    = 64 << 10
	MaxLayers    = 256
	MaxPathBytes = 4096
	maxChunkIdx  = 1<<31 - 1
)

// Profile is what the start of one image read, per layer, in first-access
// order.
type Profile struct {
	Version int `json:"version"`
	// Manifest is the digest of the image manifest the profile is for;
	// empty when the image was known only by its reference.
	Manifest digest.Digest `json:"manifest,omitempty"`
	// Ref is the image reference the profile was recorded for; it is the
	// profile's key when Manifest is empty.
	Ref    string  `json:"ref,omitempty"`
	Layers []Layer `json:"layers"`
}

// Layer is the chunks one layer's readers needed.
type Layer struct {
	Digest digest.Digest `json:"digest"` // the blob's
	TOC    digest.Digest `json:"toc"`    // the digest of its index (eStargz TOC)
	// Files are the regular files read, as paths in the layer (no
	// leading slash); Chunks the chunks read, in first-access order, each
	// [index into Files, chunk index in that file].
	Files  []string `json:"files"`
	Chunks [][2]int `json:"chunks"`
}

// Chunk is one chunk of a layer's profile.
type Chunk struct {
	Path  string
	Index int
}

// ChunkList returns the layer's chunks in first-access order.
func (l *Layer) ChunkList() []Chunk {
	out := make([]Chunk, len(l.Chunks))
	for i, c := range l.Chunks {
		out[i] = Chunk{Path: l.Files[c[0]], Index: c[1]}
	}
	return out
}

// NewLayer builds a layer's profile from its chunks in first-access order.
func NewLayer(blob, toc digest.Digest, chunks []Chunk) Layer {
	l := Layer{Digest: blob, TOC: toc, Files: []string{}, Chunks: make([][2]int, 0, len(chunks))}
	files := map[string]int{}
	for _, c := range chunks {
		i, ok := files[c.Path]
		if !ok {
			i = len(l.Files)
			files[c.Path] = i
			l.Files = append(l.Files, c.Path)
		}
		l.Chunks = append(l.Chunks, [2]int{i, c.Index})
	}
	return l
}

// Key is what a profile is stored and looked up under: the manifest
// digest, else "ref:" and the image reference.
func (p *Profile) Key() string { return Key(p.Manifest, p.Ref) }

// Key is the key of the image with manifest digest m (may be empty) and
// reference ref.
func Key(m digest.Digest, ref string) string {
	if m != "" {
		return m.String()
	}
	return "ref:" + ref
}

// Layer returns the profile of blob dg, or nil.
func (p *Profile) Layer(dg digest.Digest) *Layer {
	for i := range p.Layers {
		if p.Layers[i].Digest == dg {
			return &p.Layers[i]
		}
	}
	return nil
}

// Marshal encodes p (after checking it as Parse would).
func Marshal(p *Profile) ([]byte, error) {
	if err := p.validate(); err != nil {
		return nil, err
	}
	b, err := json.Marshal(p)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	if len(b) > MaxBytes {
		return nil, fmt.Errorf("%w: %d bytes, over %d", ErrTooLarge, len(b), MaxBytes)
	}
	return b, nil
}

// Parse decodes a profile strictly: one JSON object of this version, no
// unknown fields, valid digests, clean relative paths, every chunk naming
// a file, nothing repeated, within the caps.
func Parse(b []byte) (*Profile, error) {
	if len(b) > MaxBytes {
		return nil, fmt.Errorf("%w: %d bytes, over %d", ErrTooLarge, len(b), MaxBytes)
	}
	d := json.NewDecoder(bytes.NewReader(b))
	d.DisallowUnknownFields()
	var raw struct {
		Version  int           `json:"version"`
		Manifest digest.Digest `json:"manifest"`
		Ref      string        `json:"ref"`
		Layers   []struct {
			Digest digest.Digest `json:"digest"`
			TOC    digest.Digest `json:"toc"`
			Files  []string      `json:"files"`
			Chunks [][]int       `json:"chunks"` // [2]int would drop extra elements silently
		} `json:"layers"`
	}
	if err := d.Decode(&raw); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	if _, err := d.Token(); !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("%w: data after the profile", ErrInvalid)
	}
	p := &Profile{Version: raw.Version, Manifest: raw.Manifest, Ref: raw.Ref, Layers: make([]Layer, 0, len(raw.Layers))}
	for i, rl := range raw.Layers {
		l := Layer{Digest: rl.Digest, TOC: rl.TOC, Files: rl.Files, Chunks: make([][2]int, len(rl.Chunks))}
		for j, c := range rl.Chunks {
			if len(c) != 2 {
				return nil, fmt.Errorf("%w: layer %d: chunk %d has %d elements, want 2", ErrInvalid, i, j, len(c))
			}
			l.Chunks[j] = [2]int{c[0], c[1]}
		}
		p.Layers = append(p.Layers, l)
	}
	if err := p.validate(); err != nil {
		return nil, err
	}
	return p, nil
}

func (p *Profile) validate() error {
	if p.Version != Version {
		return fmt.Errorf("%w: version %d, want %d", ErrInvalid, p.Version, Version)
	}
	if p.Manifest != "" {
		if err := p.Manifest.Validate(); err != nil {
			return fmt.Errorf("%w: manifest: %w", ErrInvalid, err)
		}
	} else if p.Ref == "" {
		return fmt.Errorf("%w: neither manifest digest nor reference", ErrInvalid)
	}
	if len(p.Ref) > MaxPathBytes {
		return fmt.Errorf("%w: reference of %d bytes", ErrInvalid, len(p.Ref))
	}
	if len(p.Layers) > MaxLayers {
		return fmt.Errorf("%w: %d layers, over %d", ErrTooLarge, len(p.Layers), MaxLayers)
	}
	total := 0
	blobs := map[digest.Digest]bool{}
	for i := range p.Layers {
		l := &p.Layers[i]
		if err := l.Digest.Validate(); err != nil {
			return fmt.Errorf("%w: layer %d: %w", ErrInvalid, i, err)
		}
		if err := l.TOC.Validate(); err != nil {
			return fmt.Errorf("%w: layer %s: TOC: %w", ErrInvalid, l.Digest, err)
		}
		if blobs[l.Digest] {
			return fmt.Errorf("%w: layer %s twice", ErrInvalid, l.Digest)
		}
		blobs[l.Digest] = true
		if total += len(l.Chunks); total > MaxChunks {
			return fmt.Errorf("%w: over %d chunks", ErrTooLarge, MaxChunks)
		}
		if len(l.Files) > len(l.Chunks) {
			return fmt.Errorf("%w: layer %s: %d files for %d chunks", ErrInvalid, l.Digest, len(l.Files), len(l.Chunks))
		}
		files := make(map[string]bool, len(l.Files))
		for _, f := range l.Files {
			if len(f) > MaxPathBytes || f == "" || f != path.Clean(f) || strings.HasPrefix(f, "/") || f == ".." || strings.HasPrefix(f, "../") || strings.ContainsRune(f, 0) {
				return fmt.Errorf("%w: layer %s: path %q", ErrInvalid, l.Digest, f)
			}
			if files[f] {
				return fmt.Errorf("%w: layer %s: path %q twice", ErrInvalid, l.Digest, f)
			}
			files[f] = true
		}
		seen := make(map[[2]int]bool, len(l.Chunks))
		used := make([]bool, len(l.Files))
		for _, c := range l.Chunks {
			if c[0] < 0 || c[0] >= len(l.Files) || c[1] < 0 || c[1] > maxChunkIdx {
				return fmt.Errorf("%w: layer %s: chunk %v out of range", ErrInvalid, l.Digest, c)
			}
			if seen[c] {
				return fmt.Errorf("%w: layer %s: chunk %v twice", ErrInvalid, l.Digest, c)
			}
			seen[c] = true
			used[c[0]] = true
		}
		for j, u := range used {
			if !u {
				return fmt.Errorf("%w: layer %s: path %q has no chunk", ErrInvalid, l.Digest, l.Files[j])
			}
		}
	}
	return nil
}
