package soci

import (
	"encoding/json"
	"fmt"
	"strconv"

	"github.com/opencontainers/go-digest"
)

// Media types and annotations of SOCI indexes (awslabs/soci-snapshotter).
const (
	// ArtifactTypeV1 and ArtifactTypeV2 are the config media types (and
	// artifact types) of SOCI index manifests: v1 indexes are found
	// through the referrers API (their subject is the image manifest), v2
	// through AnnotationIndexDigest on the image manifest.
	ArtifactTypeV1 = "application/vnd.amazon.soci.index.v1+json"
	ArtifactTypeV2 = "application/vnd.amazon.soci.index.v2+json"
	// ZtocMediaType is the media type of a zTOC layer of the manifest.
	ZtocMediaType = "application/octet-stream"
	// PrefetchMediaType is the media type of a prefetch artifact layer
	// (not a zTOC; skipped).
	PrefetchMediaType = "application/vnd.amazon.soci.prefetch.v1+json"

	// AnnotationLayerDigest and AnnotationLayerMediaType, on a zTOC's
	// descriptor, name the image layer it indexes.
	AnnotationLayerDigest    = "com.amazon.soci.image-layer-digest"
	AnnotationLayerMediaType = "com.amazon.soci.image-layer-mediaType"
	// AnnotationSpanSize, on a zTOC's descriptor, is its span size.
	AnnotationSpanSize = "com.amazon.soci.span-size"
	// AnnotationBuildTool, on the index manifest, names what built it.
	AnnotationBuildTool = "com.amazon.soci.build-tool-identifier"
	// AnnotationIndexDigest, on an image manifest, is the digest of its v2
	// SOCI index manifest.
	AnnotationIndexDigest = "com.amazon.soci.index-digest"
	// AnnotationManifestDigest, on the SOCI index's descriptor in the image
	// index, is the digest of the image manifest it indexes.
	AnnotationManifestDigest = "com.amazon.soci.image-manifest-digest"

	// EmptyConfigDigest is the digest of "{}", the config of every SOCI
	// index manifest.
	EmptyConfigDigest = digest.Digest("sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a")

	// MaxIndexManifest caps a SOCI index manifest.
	MaxIndexManifest = 4 << 20

	mediaTypeManifest = "application/vnd.oci.image.manifest.v1+json"
)

// Descriptor is an OCI content descriptor, as the index manifest holds
// them (kept local: this package imports no OCI module).
type Descriptor struct {
	MediaType    string            `json:"mediaType"`
	ArtifactType string            `json:"artifactType,omitempty"`
	Digest       digest.Digest     `json:"digest"`
	Size         int64             `json:"size"`
	Annotations  map[string]string `json:"annotations,omitempty"`
}

// IndexManifest is a SOCI index: an OCI image manifest whose config media
// type names the index version and whose layers are the zTOCs.
type IndexManifest struct {
	SchemaVersion int               `json:"schemaVersion"`
	MediaType     string            `json:"mediaType"`
	ArtifactType  string            `json:"artifactType,omitempty"`
	Config        Descriptor        `json:"config"`
	Layers        []Descriptor      `json:"layers"`
	Subject       *Descriptor       `json:"subject,omitempty"`
	Annotations   map[string]string `json:"annotations,omitempty"`
}

// Version returns 1 or 2.
func (m *IndexManifest) Version() int {
	if m.Config.MediaType == ArtifactTypeV1 {
		return 1
	}
	return 2
}

// NewIndexManifest returns a v2 SOCI index manifest of the zTOCs given
// (each annotated with its layer's digest and media type, in image-layer
// order).
func NewIndexManifest(ztocs []Descriptor, buildTool string) *IndexManifest {
	return &IndexManifest{
		SchemaVersion: 2, MediaType: mediaTypeManifest,
		Config:      Descriptor{MediaType: ArtifactTypeV2, Digest: EmptyConfigDigest, Size: 2},
		Layers:      ztocs,
		Annotations: map[string]string{AnnotationBuildTool: buildTool},
	}
}

// NewIndexManifestV1 returns a v1 SOCI index manifest of the zTOCs given
// (as NewIndexManifest's) whose subject is the image manifest: it is
// found among the image manifest's referrers.
func NewIndexManifestV1(ztocs []Descriptor, subject Descriptor, buildTool string) *IndexManifest {
	m := NewIndexManifest(ztocs, buildTool)
	m.Config.MediaType = ArtifactTypeV1
	m.Subject = &subject
	return m
}

// ZtocDescriptor returns the descriptor of the zTOC of layer in the image,
// with the span size it names.
func ZtocDescriptor(ztoc []byte, layer Descriptor, spanSize int64) Descriptor {
	return Descriptor{MediaType: ZtocMediaType, Digest: digest.FromBytes(ztoc), Size: int64(len(ztoc)),
		Annotations: map[string]string{
			AnnotationLayerDigest:    layer.Digest.String(),
			AnnotationLayerMediaType: layer.MediaType,
			AnnotationSpanSize:       strconv.FormatInt(spanSize, 10),
		}}
}

// ParseIndexManifest parses and validates a SOCI index manifest (v1 or
// v2). Errors wrap ErrFormat, ErrInvalid, ErrTooLarge or ErrUnsupported.
func ParseIndexManifest(b []byte) (*IndexManifest, error) {
	if len(b) > MaxIndexManifest {
		return nil, fmt.Errorf("%w: index manifest of %d bytes", ErrTooLarge, len(b))
	}
	var m IndexManifest
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, fmt.Errorf("%w: index manifest: %w", ErrFormat, err)
	}
	if m.SchemaVersion != 2 || m.MediaType != "" && m.MediaType != mediaTypeManifest {
		return nil, fmt.Errorf("%w: index manifest schema %d, media type %q", ErrFormat, m.SchemaVersion, m.MediaType)
	}
	if m.Config.MediaType != ArtifactTypeV1 && m.Config.MediaType != ArtifactTypeV2 {
		return nil, fmt.Errorf("%w: index manifest config media type %q", ErrUnsupported, m.Config.MediaType)
	}
	seen := map[digest.Digest]bool{}
	for i, l := range m.Layers {
		if err := l.Digest.Validate(); err != nil {
			return nil, fmt.Errorf("%w: index layer %d: digest %q: %w", ErrInvalid, i, l.Digest, err)
		}
		if l.Size <= 0 || l.Size > MaxZtocSize {
			return nil, fmt.Errorf("%w: index layer %d: size %d", ErrInvalid, i, l.Size)
		}
		if l.MediaType == PrefetchMediaType {
			continue
		}
		ld, ok := l.Annotations[AnnotationLayerDigest]
		if !ok {
			return nil, fmt.Errorf("%w: zTOC %s names no image layer", ErrInvalid, l.Digest)
		}
		d, err := digest.Parse(ld)
		if err != nil {
			return nil, fmt.Errorf("%w: zTOC %s: layer digest %q: %w", ErrInvalid, l.Digest, ld, err)
		}
		if seen[d] {
			return nil, fmt.Errorf("%w: two zTOCs for layer %s", ErrInvalid, d)
		}
		seen[d] = true
	}
	return &m, nil
}

// Ztoc returns the descriptor of the zTOC of layer.
func (m *IndexManifest) Ztoc(layer digest.Digest) (Descriptor, error) {
	for _, l := range m.Layers {
		if l.MediaType != PrefetchMediaType && l.Annotations[AnnotationLayerDigest] == layer.String() {
			return l, nil
		}
	}
	return Descriptor{}, fmt.Errorf("%w: the SOCI index has no zTOC for layer %s", ErrNotFound, layer)
}
