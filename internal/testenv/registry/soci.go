package registry

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"fmt"
	"strconv"

	"github.com/lazysnap/lazysnap/soci"
	"github.com/opencontainers/go-digest"
	specs "github.com/opencontainers/image-spec/specs-go"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// SociImage is an image pushed with PushSociImage.
type SociImage struct {
	Image
	Index ocispec.Descriptor   // the image index tagged
	Ztocs []*soci.Ztoc         // per layer, as pushed
	Sizes []ocispec.Descriptor // the zTOCs' descriptors
}

// PushSociImage pushes gzip tar layers unchanged with a SOCI v2 index as
// soci convert lays it out (zTOCs of span bytes built by soci.Build, index
// manifest, image manifest annotated with its digest, an image index of
// both tagged tag). tamper, if set, changes each zTOC before it is pushed.
func (p *Pusher) PushSociImage(ctx context.Context, host, repo, tag string, span int64, tamper func(layer int, z *soci.Ztoc), layers ...[]byte) (SociImage, error) {
	return p.pushSoci(ctx, host, repo, tag, span, tamper, false, layers)
}

// PushSociImageV1 is PushSociImage with a v1 SOCI index instead, as soci
// create made them: the image manifest tagged, unannotated, and the index
// a referrer of it, listed in the referrers tag schema's index (tag
// sha256-<hex>; the registry has no referrers API).
func (p *Pusher) PushSociImageV1(ctx context.Context, host, repo, tag string, span int64, layers ...[]byte) (SociImage, error) {
	return p.pushSoci(ctx, host, repo, tag, span, nil, true, layers)
}

// PushSociImageV1Tampered is PushSociImageV1 with each zTOC changed by
// tamper before it is pushed: a forged v1 referrer.
func (p *Pusher) PushSociImageV1Tampered(ctx context.Context, host, repo, tag string, span int64, tamper func(layer int, z *soci.Ztoc), layers ...[]byte) (SociImage, error) {
	return p.pushSoci(ctx, host, repo, tag, span, tamper, true, layers)
}

// pushZtocs pushes the gzip layers (into img.Layers) and a zTOC of each,
// changed by tamper, and returns the zTOCs' descriptors.
func (p *Pusher) pushZtocs(ctx context.Context, repo string, span int64, tamper func(layer int, z *soci.Ztoc), layers [][]byte, img *SociImage) ([]soci.Descriptor, error) {
	var ztocs []soci.Descriptor
	for i, l := range layers {
		d, err := p.PushBlob(ctx, repo, l)
		if err != nil {
			return nil, err
		}
		d.MediaType = ocispec.MediaTypeImageLayerGzip
		img.Layers = append(img.Layers, d)
		z, err := soci.Build(bytes.NewReader(l), soci.BuildOptions{SpanSize: span})
		if err != nil {
			return nil, fmt.Errorf("layer %d: %w", i, err)
		}
		if tamper != nil {
			tamper(i, z)
		}
		zb := soci.Marshal(z)
		if _, err := p.PushBlob(ctx, repo, zb); err != nil {
			return nil, err
		}
		zd := soci.ZtocDescriptor(zb, soci.Descriptor{MediaType: d.MediaType, Digest: d.Digest}, span)
		if p.Pack != nil {
			packed, err := soci.PackZtoc(zb, zd.Annotations)
			if err != nil {
				return nil, err
			}
			if b := p.Pack(i, packed); b != nil {
				if _, err := p.PushBlob(ctx, repo, b); err != nil {
					return nil, err
				}
				zd.Annotations[soci.AnnotationPackedDigest] = digest.FromBytes(b).String()
				zd.Annotations[soci.AnnotationPackedSize] = strconv.Itoa(len(b))
			}
		}
		ztocs = append(ztocs, zd)
		img.Ztocs = append(img.Ztocs, z)
		img.Sizes = append(img.Sizes, ocispec.Descriptor{MediaType: zd.MediaType, Digest: zd.Digest, Size: zd.Size})
	}
	return ztocs, nil
}

// PushSociReferrerV1 attaches a v1 SOCI index of the gzip layers (zTOCs
// changed by tamper) to the manifest subject already in repo, as a
// referrer listed under the referrers tag schema (tag sha256-<hex>), as
// anyone who can push to the repository could.
func (p *Pusher) PushSociReferrerV1(ctx context.Context, repo string, subject ocispec.Descriptor, span int64, tamper func(layer int, z *soci.Ztoc), layers ...[]byte) (SociImage, error) {
	var img SociImage
	ztocs, err := p.pushZtocs(ctx, repo, span, tamper, layers, &img)
	if err != nil {
		return img, err
	}
	return img, p.pushReferrerV1(ctx, repo, subject, ztocs)
}

func (p *Pusher) pushReferrerV1(ctx context.Context, repo string, subject ocispec.Descriptor, ztocs []soci.Descriptor) error {
	if _, err := p.PushBlob(ctx, repo, []byte("{}")); err != nil {
		return err
	}
	sociIdx := soci.NewIndexManifest(ztocs, "lazysnap test")
	sociIdx.Config.MediaType = soci.ArtifactTypeV1
	sociIdx.Subject = &soci.Descriptor{MediaType: subject.MediaType, Digest: subject.Digest, Size: subject.Size}
	ib, _ := json.Marshal(sociIdx)
	sd, err := p.PushManifest(ctx, repo, digest.FromBytes(ib).String(), ocispec.MediaTypeImageManifest, ib)
	if err != nil {
		return err
	}
	sd.ArtifactType = soci.ArtifactTypeV1
	refs, _ := json.Marshal(ocispec.Index{Versioned: specs.Versioned{SchemaVersion: 2}, MediaType: ocispec.MediaTypeImageIndex,
		Manifests: []ocispec.Descriptor{sd}})
	_, err = p.PushManifest(ctx, repo, "sha256-"+subject.Digest.Encoded(), ocispec.MediaTypeImageIndex, refs)
	return err
}

// diffIDs are the digests of the gzip layers' tars, for the image config.
func diffIDs(layers [][]byte) ([]digest.Digest, error) {
	ids := make([]digest.Digest, 0, len(layers))
	for i, l := range layers {
		zr, err := gzip.NewReader(bytes.NewReader(l))
		if err != nil {
			return nil, fmt.Errorf("layer %d: %w", i, err)
		}
		dg, err := digest.FromReader(zr)
		if err != nil {
			return nil, fmt.Errorf("layer %d: %w", i, err)
		}
		ids = append(ids, dg)
	}
	return ids, nil
}

func (p *Pusher) pushSoci(ctx context.Context, host, repo, tag string, span int64, tamper func(layer int, z *soci.Ztoc), v1 bool, layers [][]byte) (SociImage, error) {
	img := SociImage{Image: Image{Ref: host + "/" + repo + ":" + tag}}
	ztocs, err := p.pushZtocs(ctx, repo, span, tamper, layers, &img)
	if err != nil {
		return img, err
	}
	if _, err := p.PushBlob(ctx, repo, []byte("{}")); err != nil {
		return img, err
	}
	ids, err := diffIDs(layers)
	if err != nil {
		return img, err
	}
	cfg, _ := json.Marshal(ocispec.Image{Platform: ocispec.Platform{OS: "linux", Architecture: "amd64"},
		RootFS: ocispec.RootFS{Type: "layers", DiffIDs: ids}})
	if img.Config, err = p.PushBlob(ctx, repo, cfg); err != nil {
		return img, err
	}
	img.Config.MediaType = ocispec.MediaTypeImageConfig
	sociIdx := soci.NewIndexManifest(ztocs, "lazysnap test")
	if v1 {
		m, _ := json.Marshal(ocispec.Manifest{Versioned: specs.Versioned{SchemaVersion: 2}, MediaType: ocispec.MediaTypeImageManifest,
			Config: img.Config, Layers: img.Layers})
		if img.Manifest, err = p.PushManifest(ctx, repo, tag, ocispec.MediaTypeImageManifest, m); err != nil {
			return img, err
		}
		img.ManifestBytes = m
		return img, p.pushReferrerV1(ctx, repo, img.Manifest, ztocs)
	}
	ib, _ := json.Marshal(sociIdx)
	sd, err := p.PushManifest(ctx, repo, digest.FromBytes(ib).String(), ocispec.MediaTypeImageManifest, ib)
	if err != nil {
		return img, err
	}
	m, _ := json.Marshal(ocispec.Manifest{Versioned: specs.Versioned{SchemaVersion: 2}, MediaType: ocispec.MediaTypeImageManifest,
		Config: img.Config, Layers: img.Layers, Annotations: map[string]string{soci.AnnotationIndexDigest: sd.Digest.String()}})
	if img.Manifest, err = p.PushManifest(ctx, repo, digest.FromBytes(m).String(), ocispec.MediaTypeImageManifest, m); err != nil {
		return img, err
	}
	img.ManifestBytes = m
	plat := &ocispec.Platform{OS: "linux", Architecture: "amd64"}
	md := img.Manifest
	md.Platform = plat
	sd.ArtifactType, sd.Platform = soci.ArtifactTypeV2, plat
	sd.Annotations = map[string]string{soci.AnnotationManifestDigest: md.Digest.String()}
	ix, _ := json.Marshal(ocispec.Index{Versioned: specs.Versioned{SchemaVersion: 2}, MediaType: ocispec.MediaTypeImageIndex,
		Manifests: []ocispec.Descriptor{md, sd}})
	img.Index, err = p.PushManifest(ctx, repo, tag, ocispec.MediaTypeImageIndex, ix)
	return img, err
}
