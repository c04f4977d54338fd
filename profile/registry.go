package profile

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/containerd/containerd/v2/pkg/reference"
	"github.com/lazysnap/lazysnap/fetcher"
	"github.com/opencontainers/go-digest"
	specs "github.com/opencontainers/image-spec/specs-go"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// Registry is the registry access Publish and Find need; *fetcher.Fetcher
// has it.
type Registry interface {
	Resolve(ctx context.Context, ref string) (string, ocispec.Descriptor, error)
	Fetch(ctx context.Context, ref string, desc ocispec.Descriptor) (io.ReadCloser, error)
	Push(ctx context.Context, ref string, desc ocispec.Descriptor, data []byte) error
	// Referrers returns the referrers API's image index for subject;
	// an error wrapping fetcher.ErrNotFound when the registry has no such
	// API (as Resolve's for a missing tag).
	Referrers(ctx context.Context, ref string, subject digest.Digest, artifactType string) ([]byte, error)
}

// MaxManifest caps an artifact manifest or referrers index read.
const MaxManifest = 4 << 20

// createdAnnotation orders profiles of one image: the newest is used.
const createdAnnotation = "org.opencontainers.image.created"

// emptyJSON is the OCI 1.1 empty descriptor's content.
var emptyJSON = []byte("{}")

func emptyConfig() ocispec.Descriptor {
	return ocispec.Descriptor{MediaType: "application/vnd.oci.empty.v1+json", Digest: digest.FromBytes(emptyJSON), Size: int64(len(emptyJSON)), Data: emptyJSON}
}

// repoOf is the registry host and repository of ref, without tag or digest.
func repoOf(ref string) (string, error) {
	spec, err := reference.Parse(ref)
	if err != nil {
		return "", fmt.Errorf("%w: reference %q: %w", ErrInvalid, ref, err)
	}
	return spec.Locator, nil
}

// tagSchemaTag is the referrers tag schema's tag of subject.
func tagSchemaTag(subject digest.Digest) string {
	return subject.Algorithm().String() + "-" + subject.Encoded()
}

// Published describes a pushed profile artifact.
type Published struct {
	Manifest  ocispec.Descriptor // the artifact's manifest
	TagSchema bool               // the referrers tag schema index was updated (no referrers API)
}

// Publish pushes p, a profile of an image of ref's repository, as an OCI
// artifact whose subject is p.Manifest, and makes it findable: through
// the registry's referrers API when it has one, else by adding it to the
// referrers tag schema index (tag sha256-<hex>). now dates it (the
// newest profile of an image is the one used).
func Publish(ctx context.Context, reg Registry, ref string, p *Profile, now time.Time) (*Published, error) {
	if p.Manifest == "" {
		return nil, fmt.Errorf("%w: a profile without manifest digest cannot be published", ErrInvalid)
	}
	repo, err := repoOf(ref)
	if err != nil {
		return nil, err
	}
	blob, err := Marshal(p)
	if err != nil {
		return nil, err
	}
	_, subject, err := reg.Resolve(ctx, repo+"@"+p.Manifest.String())
	if err != nil {
		return nil, fmt.Errorf("profile: the image %s@%s: %w", repo, p.Manifest, err)
	}
	cfg := emptyConfig()
	layer := ocispec.Descriptor{MediaType: MediaType, Digest: digest.FromBytes(blob), Size: int64(len(blob))}
	created := now.UTC().Format(time.RFC3339Nano)
	m := ocispec.Manifest{
		Versioned:    specs.Versioned{SchemaVersion: 2},
		MediaType:    ocispec.MediaTypeImageManifest,
		ArtifactType: MediaType,
		Config:       cfg,
		Layers:       []ocispec.Descriptor{layer},
		Subject:      &ocispec.Descriptor{MediaType: subject.MediaType, Digest: subject.Digest, Size: subject.Size},
		Annotations:  map[string]string{createdAnnotation: created},
	}
	mb, err := json.Marshal(m)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	md := ocispec.Descriptor{MediaType: ocispec.MediaTypeImageManifest, ArtifactType: MediaType, Digest: digest.FromBytes(mb), Size: int64(len(mb)), Annotations: m.Annotations}
	tagSchema, err := PushReferrer(ctx, reg, repo, subject.Digest, []Content{{cfg, emptyJSON}, {layer, blob}}, md, mb)
	if err != nil {
		return nil, err
	}
	return &Published{Manifest: md, TagSchema: tagSchema}, nil
}

// Content is a blob to push, with its descriptor.
type Content struct {
	Desc ocispec.Descriptor
	Data []byte
}

// PushReferrer pushes blobs, then the artifact manifest mb (md describes
// it, with the artifactType and annotations its referrers list shows), to
// repo (registry host and repository), and makes the manifest findable as
// a referrer of subject there: through the registry's referrers API when
// it has one, else by adding md to the referrers tag schema index (tag
// sha256-<hex>; a manifest it lists already is not added again). It
// reports whether the tag schema was updated. The subject need not be in
// repo. Callers that push referrers of one subject concurrently must
// serialize them: the tag schema index is read, extended and written.
func PushReferrer(ctx context.Context, reg Registry, repo string, subject digest.Digest, blobs []Content, md ocispec.Descriptor, mb []byte) (tagSchema bool, err error) {
	for _, c := range append(blobs, Content{md, mb}) {
		d := c.Desc
		d.Data, d.Annotations, d.ArtifactType = nil, nil, ""
		if err := reg.Push(ctx, repo+"@"+d.Digest.String(), d, c.Data); err != nil {
			return false, fmt.Errorf("profile: pushing %s: %w", d.Digest, err)
		}
	}
	if _, err := reg.Referrers(ctx, repo, subject, md.ArtifactType); err == nil {
		return false, nil // the registry indexes the subject itself
	} else if !isNotFound(err) {
		return false, fmt.Errorf("profile: referrers of %s: %w", subject, err)
	}
	idx, err := tagSchemaIndex(ctx, reg, repo, subject)
	if err != nil {
		return false, err
	}
	for _, d := range idx.Manifests {
		if d.Digest == md.Digest {
			return true, nil
		}
	}
	idx.Manifests = append(idx.Manifests, md)
	ib, err := json.Marshal(idx)
	if err != nil {
		return false, fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	if len(ib) > MaxManifest {
		return false, fmt.Errorf("%w: referrers index of %d bytes", ErrTooLarge, len(ib))
	}
	id := ocispec.Descriptor{MediaType: ocispec.MediaTypeImageIndex, Digest: digest.FromBytes(ib), Size: int64(len(ib))}
	if err := reg.Push(ctx, repo+":"+tagSchemaTag(subject), id, ib); err != nil {
		return false, fmt.Errorf("profile: pushing the referrers tag %s: %w", tagSchemaTag(subject), err)
	}
	return true, nil
}

// isNotFound reports a registry's 404 (no such tag, no referrers API).
func isNotFound(err error) bool { return errors.Is(err, fetcher.ErrNotFound) }

// tagSchemaIndex reads the referrers tag schema index of subject, or an
// empty one when the tag does not exist.
func tagSchemaIndex(ctx context.Context, reg Registry, repo string, subject digest.Digest) (*ocispec.Index, error) {
	ref := repo + ":" + tagSchemaTag(subject)
	_, d, err := reg.Resolve(ctx, ref)
	if isNotFound(err) {
		return &ocispec.Index{Versioned: specs.Versioned{SchemaVersion: 2}, MediaType: ocispec.MediaTypeImageIndex, Manifests: []ocispec.Descriptor{}}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("profile: referrers tag of %s: %w", subject, err)
	}
	b, err := fetchCapped(ctx, reg, ref, d)
	if err != nil {
		return nil, err
	}
	return ParseIndex(b)
}

func fetchCapped(ctx context.Context, reg Registry, ref string, d ocispec.Descriptor) ([]byte, error) {
	if d.Size > MaxManifest {
		return nil, fmt.Errorf("%w: %s is %d bytes", ErrTooLarge, d.Digest, d.Size)
	}
	rc, err := reg.Fetch(ctx, ref, d)
	if err != nil {
		return nil, fmt.Errorf("profile: fetching %s: %w", d.Digest, err)
	}
	defer rc.Close()
	b, err := io.ReadAll(io.LimitReader(rc, MaxManifest+1))
	if err != nil {
		return nil, fmt.Errorf("profile: fetching %s: %w", d.Digest, err)
	}
	if len(b) > MaxManifest {
		return nil, fmt.Errorf("%w: %s over %d bytes", ErrTooLarge, d.Digest, MaxManifest)
	}
	return b, nil
}

// ParseIndex decodes an image index (a referrers list) strictly enough to
// trust its descriptors: the index media type, valid digests, sizes.
func ParseIndex(b []byte) (*ocispec.Index, error) {
	if len(b) > MaxManifest {
		return nil, fmt.Errorf("%w: index of %d bytes", ErrTooLarge, len(b))
	}
	var idx ocispec.Index
	if err := json.Unmarshal(b, &idx); err != nil {
		return nil, fmt.Errorf("%w: index: %w", ErrInvalid, err)
	}
	if idx.SchemaVersion != 2 || idx.MediaType != "" && idx.MediaType != ocispec.MediaTypeImageIndex {
		return nil, fmt.Errorf("%w: index: schema %d, media type %q", ErrInvalid, idx.SchemaVersion, idx.MediaType)
	}
	if idx.Manifests == nil {
		idx.Manifests = []ocispec.Descriptor{}
	}
	for _, d := range idx.Manifests {
		if err := checkDescriptor(d); err != nil {
			return nil, fmt.Errorf("%w: index: %w", ErrInvalid, err)
		}
	}
	return &idx, nil
}

func checkDescriptor(d ocispec.Descriptor) error {
	if err := d.Digest.Validate(); err != nil {
		return err
	}
	if d.Size < 0 {
		return fmt.Errorf("descriptor %s: size %d", d.Digest, d.Size)
	}
	return nil
}

// ParseArtifact decodes a profile artifact's manifest and returns its
// profile layer, checking artifactType, subject and the one layer.
func ParseArtifact(b []byte, subject digest.Digest) (ocispec.Descriptor, error) {
	if len(b) > MaxManifest {
		return ocispec.Descriptor{}, fmt.Errorf("%w: manifest of %d bytes", ErrTooLarge, len(b))
	}
	var m ocispec.Manifest
	if err := json.Unmarshal(b, &m); err != nil {
		return ocispec.Descriptor{}, fmt.Errorf("%w: artifact: %w", ErrInvalid, err)
	}
	switch {
	case m.SchemaVersion != 2 || m.MediaType != ocispec.MediaTypeImageManifest:
		return ocispec.Descriptor{}, fmt.Errorf("%w: artifact: schema %d, media type %q", ErrInvalid, m.SchemaVersion, m.MediaType)
	case m.ArtifactType != MediaType:
		return ocispec.Descriptor{}, fmt.Errorf("%w: artifact type %q", ErrInvalid, m.ArtifactType)
	case m.Subject == nil || m.Subject.Digest != subject:
		return ocispec.Descriptor{}, fmt.Errorf("%w: artifact is not for %s", ErrInvalid, subject)
	case len(m.Layers) != 1 || m.Layers[0].MediaType != MediaType:
		return ocispec.Descriptor{}, fmt.Errorf("%w: artifact: want one layer of %s", ErrInvalid, MediaType)
	}
	l := m.Layers[0]
	if err := checkDescriptor(l); err != nil {
		return ocispec.Descriptor{}, fmt.Errorf("%w: artifact: %w", ErrInvalid, err)
	}
	if l.Size > MaxBytes {
		return ocispec.Descriptor{}, fmt.Errorf("%w: profile blob of %d bytes", ErrTooLarge, l.Size)
	}
	return l, nil
}

// Find finds the newest profile of the image with manifest digest
// manifest in ref's repository: through the referrers API, or the tag
// schema where the registry has none. ErrNotFound when there is none.
// The profile is checked to be for that manifest.
func Find(ctx context.Context, reg Registry, ref string, manifest digest.Digest) (*Profile, error) {
	repo, err := repoOf(ref)
	if err != nil {
		return nil, err
	}
	var idx *ocispec.Index
	b, err := reg.Referrers(ctx, repo, manifest, MediaType)
	switch {
	case err == nil:
		if idx, err = ParseIndex(b); err != nil {
			return nil, err
		}
	case isNotFound(err):
		if idx, err = tagSchemaIndex(ctx, reg, repo, manifest); err != nil {
			return nil, err
		}
	default:
		return nil, fmt.Errorf("profile: referrers of %s: %w", manifest, err)
	}
	var best *ocispec.Descriptor
	for i, d := range idx.Manifests {
		if d.ArtifactType != MediaType {
			continue
		}
		if best == nil || d.Annotations[createdAnnotation] >= best.Annotations[createdAnnotation] {
			best = &idx.Manifests[i]
		}
	}
	if best == nil {
		return nil, fmt.Errorf("%w: no profile of %s in %s", ErrNotFound, manifest, repo)
	}
	mref := repo + "@" + best.Digest.String()
	mb, err := fetchCapped(ctx, reg, mref, ocispec.Descriptor{MediaType: best.MediaType, Digest: best.Digest, Size: best.Size})
	if err != nil {
		return nil, err
	}
	layer, err := ParseArtifact(mb, manifest)
	if err != nil {
		return nil, err
	}
	pb, err := fetchCapped(ctx, reg, mref, layer)
	if err != nil {
		return nil, err
	}
	p, err := Parse(pb)
	if err != nil {
		return nil, err
	}
	if p.Manifest != manifest {
		return nil, fmt.Errorf("%w: the profile in %s is for %s, not %s", ErrInvalid, best.Digest, p.Manifest, manifest)
	}
	return p, nil
}
