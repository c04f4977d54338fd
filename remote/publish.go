package remote

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/lazysnap/lazysnap/profile"
	"github.com/lazysnap/lazysnap/soci"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// PublishOptions make the zTOCs that line-rate pulls keep known to other
// nodes: after a Pull kept a layer's zTOC, the FS pushes, in the
// background, a v1 SOCI index of the image (subject: the image manifest;
// layers: the local zTOCs of every layer of it pulled so far, with the
// zTOC blobs) to Repository, where nodes that trust that repository
// (WithTrustedSociRepositories) find it among the manifest's referrers and
// mount the image lazily. Whoever can push to Repository chooses what the
// lazy mounts of those nodes serve until each layer is complete and
// checked against its digest: the trust model of the package
// documentation.
type PublishOptions struct {
	// Repository is registry host and path ("registry.example/indexes");
	// pushing needs a hosts.toml host with the push capability.
	Repository string
	// Registry pushes (the fetcher).
	Registry profile.Registry
}

// publishBuildTool names lazysnap in the indexes it publishes.
const publishBuildTool = "lazysnap line-rate pull"

// manifestSource is a Source that resolves an image's manifest
// (fetcherSource).
type manifestSource interface {
	manifest(ctx context.Context, ref string) (imageManifest, error)
}

// errNoManifests: the FS was asked to publish through a Source that
// cannot resolve manifests.
var errNoManifests = errors.New("remote: the source cannot resolve image manifests")

// publishAfter pushes, in a goroutine of the FS's, the SOCI index of the
// image ref names after the pull e kept a zTOC; e's Published says how it
// went. The FS's pushes are serialized: each reads and extends the
// repository's referrers tag schema index, and each includes every zTOC
// present when it runs, so the last one of an image lists them all.
func (r *FS) publishAfter(e *pullEntry, ref string) {
	r.pulls.published(e, "publishing")
	if !r.spawn(func(ctx context.Context) {
		r.pubMu.Lock()
		defer r.pubMu.Unlock()
		idx, err := r.publish(ctx, ref)
		if err != nil {
			r.pulls.published(e, "not published: "+err.Error())
			return
		}
		r.pulls.published(e, fmt.Sprintf("published in SOCI index %s to %s", idx, r.opts.Publish.Repository))
	}) {
		r.pulls.published(e, "not published: "+ErrClosed.Error())
	}
}

// publish pushes the v1 SOCI index of the local zTOCs of the image ref
// names to Options.Publish.Repository, and returns its digest.
func (r *FS) publish(ctx context.Context, ref string) (digest.Digest, error) {
	o := r.opts.Publish
	ms, ok := r.src.(manifestSource)
	if !ok {
		return "", errNoManifests
	}
	im, err := ms.manifest(ctx, ref)
	if err != nil {
		return "", fmt.Errorf("image %s: %w", ref, err)
	}
	var (
		ztocs []soci.Descriptor
		blobs = []profile.Content{{Desc: ocispec.Descriptor{MediaType: "application/vnd.oci.empty.v1+json", Digest: soci.EmptyConfigDigest, Size: 2}, Data: []byte("{}")}}
	)
	for _, l := range im.layers {
		if l.Digest.Validate() != nil {
			continue
		}
		raw, err := os.ReadFile(r.ztocPath(l.Digest))
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			return "", err
		}
		z := soci.ZtocDescriptor(raw, soci.Descriptor{MediaType: l.MediaType, Digest: l.Digest, Size: l.Size}, soci.DefaultSpanSize)
		ztocs = append(ztocs, z)
		blobs = append(blobs, profile.Content{Desc: ocispec.Descriptor{MediaType: z.MediaType, Digest: z.Digest, Size: z.Size}, Data: raw})
	}
	if len(ztocs) == 0 {
		return "", fmt.Errorf("image %s: no local zTOC of its layers", ref)
	}
	subject := soci.Descriptor{MediaType: im.desc.MediaType, Digest: im.desc.Digest, Size: im.desc.Size}
	idx := soci.NewIndexManifestV1(ztocs, subject, publishBuildTool)
	// dated: the referrers API lists an image's indexes in no set order,
	// and the newest lists the most layers (v1Referrer)
	idx.Annotations[ocispec.AnnotationCreated] = time.Now().UTC().Format(time.RFC3339Nano)
	mb, err := json.Marshal(idx)
	if err != nil {
		return "", err
	}
	md := ocispec.Descriptor{MediaType: ocispec.MediaTypeImageManifest, ArtifactType: soci.ArtifactTypeV1, Digest: digest.FromBytes(mb), Size: int64(len(mb)), Annotations: idx.Annotations}
	if _, err := profile.PushReferrer(ctx, o.Registry, o.Repository, im.desc.Digest, blobs, md, mb); err != nil {
		return "", err
	}
	return md.Digest, nil
}
