package convert

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/containerd/platforms"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// ErrPlatform is a --platform list that does not parse, or an image with
// no manifest for any platform of it.
var ErrPlatform = errors.New("convert: platform")

// ParsePlatforms parses a comma-separated list of platforms
// (os/arch[/variant], as ctr's --platform: "linux/amd64,linux/arm64");
// "" is none, which selects every platform.
func ParsePlatforms(s string) ([]ocispec.Platform, error) {
	var out []ocispec.Platform
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f == "" {
			continue
		}
		p, err := platforms.Parse(f)
		if err != nil {
			return nil, fmt.Errorf("%w: %q: %v", ErrPlatform, f, err)
		}
		out = append(out, p)
	}
	return out, nil
}

// platformSet selects manifests by platform; the empty set selects all.
type platformSet []ocispec.Platform

func (s platformSet) all() bool { return len(s) == 0 }

// match reports whether p is one of the set's platforms (an empty set
// matches everything, a nil p nothing else).
func (s platformSet) match(p *ocispec.Platform) bool {
	if s.all() {
		return true
	}
	return p != nil && platforms.Any(s...).Match(*p)
}

// keep reports whether an image index entry is converted: an entry with a
// platform of the set, or any entry when the set is empty. Entries of an
// image index without a platform (attestations carry unknown/unknown) are
// left out when platforms were asked for.
func (s platformSet) keep(d ocispec.Descriptor) bool { return s.match(d.Platform) }

// configPlatform reads the platform of an image config (nil if it has none).
func configPlatform(b []byte) *ocispec.Platform {
	var p ocispec.Platform
	if json.Unmarshal(b, &p) != nil || p.OS == "" || p.Architecture == "" {
		return nil
	}
	return &ocispec.Platform{OS: p.OS, Architecture: p.Architecture, Variant: p.Variant}
}

// String lists the set as --platform takes it.
func (s platformSet) String() string {
	names := make([]string, len(s))
	for i, p := range s {
		names[i] = platforms.Format(p)
	}
	return strings.Join(names, ",")
}

// noneMatched is the error of an image that has no manifest for any
// platform of s.
func (s platformSet) noneMatched(what string) error {
	return fmt.Errorf("%w: %s has no manifest for %s", ErrPlatform, what, s)
}
