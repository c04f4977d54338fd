package profile

import (
	"context"
	"fmt"
	"io"
	"time"
)

// List writes one line per stored profile: key, reference, layers, chunks.
func List(s *Store, w io.Writer) error {
	ps, err := s.List()
	fmt.Fprintf(w, "%-72s %-40s %6s %7s\n", "KEY", "REF", "LAYERS", "CHUNKS")
	for _, p := range ps {
		n := 0
		for _, l := range p.Layers {
			n += len(l.Chunks)
		}
		fmt.Fprintf(w, "%-72s %-40s %6d %7d\n", p.Key(), p.Ref, len(p.Layers), n)
	}
	return err
}

// Show writes the profile stored under key: per layer its digests, then
// its chunks in first-access order.
func Show(s *Store, key string, w io.Writer) error {
	p, err := s.Get(key)
	if err != nil {
		return err
	}
	fmt.Fprintf(w, "profile %s (ref %s)\n", p.Key(), p.Ref)
	for _, l := range p.Layers {
		fmt.Fprintf(w, "layer %s toc %s: %d chunks of %d files\n", l.Digest, l.TOC, len(l.Chunks), len(l.Files))
		for _, c := range l.ChunkList() {
			fmt.Fprintf(w, "  %s #%d\n", c.Path, c.Index)
		}
	}
	return nil
}

// Push publishes the profile stored under key (a manifest digest) to the
// repository of ref, or of the reference it was recorded for when ref is
// empty.
func Push(ctx context.Context, s *Store, reg Registry, key, ref string, w io.Writer) error {
	p, err := s.Get(key)
	if err != nil {
		return err
	}
	if ref == "" {
		ref = p.Ref
	}
	pub, err := Publish(ctx, reg, ref, p, time.Now())
	if err != nil {
		return err
	}
	how := "referrers API"
	if pub.TagSchema {
		how = "referrers tag schema"
	}
	fmt.Fprintf(w, "pushed %s (%s)\n", pub.Manifest.Digest, how)
	return nil
}

// Remove removes the profile stored under key.
func Remove(s *Store, key string) error { return s.Remove(key) }
