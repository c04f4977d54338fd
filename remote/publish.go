package remote

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"sync"
	"time"

	"github.com/lazysnap/lazysnap/profile"
	"github.com/lazysnap/lazysnap/soci"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// PublishOptions make the zTOCs that line-rate pulls keep known to other
// nodes: once a pull of an image that kept a layer's zTOC is over
// (publisher), the FS pushes, in the background, one v1 SOCI index of the
// image (subject: the image manifest; layers: the local zTOCs of its
// layers, with the zTOC blobs) to Repository, where nodes that trust that repository
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
	// Quiet ends an image's pull when the labels do not say which layer
	// is its top one: none of its layers pulled for this long (default
	// 3s). See publisher.
	Quiet time.Duration
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

// defaultPublishQuiet is PublishOptions.Quiet's default.
const defaultPublishQuiet = 3 * time.Second

// publisher batches the pushes of Options.Publish: one SOCI index per
// pull of an image, not one per layer. containerd prepares an image's
// layers one after another, so an image's pull is over when its top
// layer (the last its labels list) is done and no Pull of it runs, or,
// when the labels do not say which layer is the top (or the top was not
// pulled: lazy, or present already), when none of its layers has been
// pulled for PublishOptions.Quiet.
type publisher struct {
	mu sync.Mutex
	m  map[string]*imagePublish // by image reference
}

// imagePublish is one image's pull, as far as publishing goes.
type imagePublish struct {
	inflight int          // its Pulls running
	kept     []*pullEntry // its Pulls that kept a zTOC, not pushed yet
	top      bool         // its top layer's Pull is done
	gen      int          // counts begin and end: a quiet period is one without either
	waiting  bool         // a goroutine waits to push (publishWait)
	kick     chan struct{}
}

// publishBegin records that a Pull of ref's image started; the returned
// function records its end: e kept a zTOC (kept), of the image's top
// layer (top).
func (r *FS) publishBegin(ref string) (end func(e *pullEntry, kept, top bool)) {
	p := &r.pub
	p.mu.Lock()
	if p.m == nil {
		p.m = map[string]*imagePublish{}
	}
	ip := p.m[ref]
	if ip == nil {
		ip = &imagePublish{kick: make(chan struct{}, 1)}
		p.m[ref] = ip
	}
	ip.inflight++
	ip.gen++
	p.mu.Unlock()
	ip.poke()
	return func(e *pullEntry, kept, top bool) {
		if kept {
			r.pulls.published(e, "publishing")
		}
		p.mu.Lock()
		ip.inflight--
		ip.gen++
		ip.top = ip.top || top
		if kept {
			ip.kept = append(ip.kept, e)
		}
		wait := len(ip.kept) > 0 && !ip.waiting
		ip.waiting = ip.waiting || wait
		if ip.inflight == 0 && !ip.waiting && p.m[ref] == ip {
			delete(p.m, ref) // nothing to push
		}
		p.mu.Unlock()
		if !wait {
			ip.poke()
			return
		}
		if !r.spawn(func(ctx context.Context) { r.publishWait(ctx, ref, ip) }) {
			p.mu.Lock()
			es := ip.kept
			ip.kept = nil
			p.mu.Unlock()
			for _, e := range es {
				r.pulls.published(e, "not published: "+ErrClosed.Error())
			}
		}
	}
}

// poke wakes ip's publishWait, if any.
func (ip *imagePublish) poke() {
	select {
	case ip.kick <- struct{}{}:
	default:
	}
}

// publishWait waits until the pull of ref's image is over (publisher),
// then pushes its SOCI index once and says so in the status of each Pull
// of it that kept a zTOC. The pushes of the FS are serialized: each
// reads and extends the repository's referrers tag schema index.
func (r *FS) publishWait(ctx context.Context, ref string, ip *imagePublish) {
	p := &r.pub
	quiet := r.opts.Publish.Quiet
	if quiet <= 0 {
		quiet = defaultPublishQuiet
	}
	t := time.NewTimer(quiet)
	defer t.Stop()
	for {
		p.mu.Lock()
		done := ip.inflight == 0 && ip.top
		idle, gen := ip.inflight == 0, ip.gen
		p.mu.Unlock()
		if done {
			break
		}
		t.Reset(quiet)
		select {
		case <-ip.kick:
			continue
		case <-ctx.Done():
		case <-t.C:
			p.mu.Lock()
			done = idle && ip.inflight == 0 && ip.gen == gen
			p.mu.Unlock()
			if !done {
				continue
			}
		}
		break
	}
	p.mu.Lock()
	es := ip.kept
	ip.kept, ip.waiting, ip.top = nil, false, false
	if ip.inflight == 0 && p.m[ref] == ip {
		delete(p.m, ref)
	}
	p.mu.Unlock()
	status := func() string {
		if ctx.Err() != nil {
			return "not published: " + ErrClosed.Error()
		}
		r.pubMu.Lock()
		defer r.pubMu.Unlock()
		idx, err := r.publish(ctx, ref)
		if err != nil {
			return "not published: " + err.Error()
		}
		return fmt.Sprintf("published in SOCI index %s to %s", idx, r.opts.Publish.Repository)
	}()
	for _, e := range es {
		r.pulls.published(e, status)
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
		zt, err := soci.Unmarshal(raw, 0)
		if err != nil {
			continue // not one a Mount would use either
		}
		z := soci.ZtocDescriptor(raw, soci.Descriptor{MediaType: l.MediaType, Digest: l.Digest, Size: l.Size}, zt.Checkpoints.SpanSize)
		packed, err := soci.PackZtoc(raw, z.Annotations)
		if err != nil {
			return "", err
		}
		ztocs = append(ztocs, z)
		blobs = append(blobs, profile.Content{Desc: ocispec.Descriptor{MediaType: z.MediaType, Digest: z.Digest, Size: z.Size}, Data: raw},
			profile.Content{Desc: ocispec.Descriptor{MediaType: soci.PackedMediaType, Digest: digest.FromBytes(packed), Size: int64(len(packed))}, Data: packed})
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
