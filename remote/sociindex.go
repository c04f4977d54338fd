package remote

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
	"sync"

	"github.com/containerd/containerd/v2/pkg/reference"
	"github.com/lazysnap/lazysnap/fetcher"
	"github.com/lazysnap/lazysnap/soci"
	"github.com/lazysnap/lazysnap/soci/lazy"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// annSociNone, on a layer descriptor without lazy.AnnotationZtocDigest, says why the
// image's SOCI index gives it no zTOC (for the fallback's reason).
const annSociNone = "dev.lazysnap.soci.none"

// sociCache holds what Layer learnt of an image manifest's SOCI index,
// by the manifest's digest, and the manifests and indexes Layer read, by
// digest (content-addressed, so never stale): every layer of an image
// would read the same ones again, a round trip each. It is bounded by
// dropping everything when full.
type sociCache struct {
	mu   sync.Mutex
	m    map[digest.Digest]sociLookup
	docs map[digest.Digest][]byte
}

// doc returns the cached document d, nil if none.
func (c *sociCache) doc(d digest.Digest) []byte {
	if c == nil {
		return nil
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.docs[d]
}

func (c *sociCache) putDoc(d digest.Digest, b []byte) {
	if c == nil {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.docs) >= sociCacheMax {
		clear(c.docs)
	}
	c.docs[d] = b
}

type sociLookup struct {
	idx *soci.IndexManifest // nil: none
	why string              // why there is none
}

const sociCacheMax = 256

func newSociCache() *sociCache {
	return &sociCache{m: map[digest.Digest]sociLookup{}, docs: map[digest.Digest][]byte{}}
}

// withZtoc returns layer l of the image manifest man, annotated with the
// zTOC its image's SOCI index names for it (lazy.AnnotationZtocDigest, lazy.AnnotationZtocSize),
// or with why there is none (annSociNone). A layer that a format claims
// already (eStargz, zstd:chunked: an index of its own) is returned as it
// is. The SOCI index is the one the manifest's annotation names
// (v2, listed in the image index beside it), else, with WithSociV1, the
// newest v1 index among the manifest's referrers.
func (s fetcherSource) withZtoc(ctx context.Context, ref string, man ocispec.Descriptor, ann map[string]string, siblings []ocispec.Descriptor, l ocispec.Descriptor) ocispec.Descriptor {
	if _, err := pickFormat(l, 0, nil); err == nil {
		return l
	}
	lk := s.sociIndex(ctx, ref, man, ann, siblings)
	out := l
	out.Annotations = make(map[string]string, len(l.Annotations)+2)
	for k, v := range l.Annotations {
		out.Annotations[k] = v
	}
	if lk.idx == nil {
		out.Annotations[annSociNone] = lk.why
		return out
	}
	z, err := lk.idx.Ztoc(l.Digest)
	if err != nil {
		out.Annotations[annSociNone] = err.Error()
		return out
	}
	out.Annotations[lazy.AnnotationZtocDigest] = z.Digest.String()
	out.Annotations[lazy.AnnotationZtocSize] = strconv.FormatInt(z.Size, 10)
	return out
}

func (s fetcherSource) sociIndex(ctx context.Context, ref string, man ocispec.Descriptor, ann map[string]string, siblings []ocispec.Descriptor) sociLookup {
	if s.soci != nil {
		s.soci.mu.Lock()
		lk, ok := s.soci.m[man.Digest]
		s.soci.mu.Unlock()
		if ok {
			return lk
		}
	}
	lk, cache := s.findSociIndex(ctx, ref, man, ann, siblings)
	if s.soci != nil && cache {
		s.soci.mu.Lock()
		if len(s.soci.m) >= sociCacheMax {
			clear(s.soci.m)
		}
		s.soci.m[man.Digest] = lk
		s.soci.mu.Unlock()
	}
	return lk
}

// findSociIndex looks the index up; cache is false when the lookup failed
// for a reason that may pass (the registry unavailable).
func (s fetcherSource) findSociIndex(ctx context.Context, ref string, man ocispec.Descriptor, ann map[string]string, siblings []ocispec.Descriptor) (lk sociLookup, cache bool) {
	var desc ocispec.Descriptor
	if v, ok := ann[soci.AnnotationIndexDigest]; ok {
		d, err := digest.Parse(v)
		if err != nil {
			return sociLookup{why: fmt.Sprintf("image manifest annotation %s=%q: %v", soci.AnnotationIndexDigest, v, err)}, true
		}
		desc = ocispec.Descriptor{MediaType: ocispec.MediaTypeImageManifest, Digest: d}
		for _, m := range siblings {
			if m.Digest == d {
				desc.Size = m.Size
			}
		}
	} else {
		b, err := s.f.Referrers(ctx, ref, man.Digest, soci.ArtifactTypeV1)
		if errors.Is(err, fetcher.ErrNotFound) {
			// no referrers API: the referrers tag schema (tag sha256-<hex>)
			b, err = s.tagSchemaIndex(ctx, ref, man.Digest)
		}
		if errors.Is(err, fetcher.ErrNotFound) {
			return sociLookup{why: "the image has no SOCI index"}, true
		}
		if err != nil {
			return sociLookup{why: fmt.Sprintf("SOCI index lookup: %v", err)}, false
		}
		var refs ocispec.Index
		if err := json.Unmarshal(b, &refs); err != nil {
			return sociLookup{why: fmt.Sprintf("referrers of %s: %v", man.Digest, err)}, true
		}
		for _, m := range refs.Manifests { // the last listed: the newest, as the registry orders them
			if m.ArtifactType == soci.ArtifactTypeV1 {
				desc = m
			}
		}
		if desc.Digest == "" {
			return sociLookup{why: "the image has no SOCI index"}, true
		}
		if !s.sociV1 {
			return sociLookup{why: fmt.Sprintf("the image's only SOCI index, %s, is a v1 index among the manifest's referrers, which anyone who can push to the repository can add; v1 indexes are off ([soci] allow_v1_indexes)", desc.Digest)}, true
		}
	}
	b, err := s.fetchBlob(ctx, ref, desc, soci.MaxIndexManifest)
	if err != nil {
		return sociLookup{why: fmt.Sprintf("SOCI index %s: %v", desc.Digest, err)}, errors.Is(err, fetcher.ErrDigestMismatch)
	}
	idx, err := soci.ParseIndexManifest(b)
	if err != nil {
		return sociLookup{why: fmt.Sprintf("SOCI index %s: %v", desc.Digest, err)}, true
	}
	if idx.Version() == 1 && (idx.Subject == nil || idx.Subject.Digest != man.Digest) {
		return sociLookup{why: fmt.Sprintf("SOCI index %s is not of manifest %s", desc.Digest, man.Digest)}, true
	}
	return sociLookup{idx: idx}, true
}

// tagSchemaIndex reads the referrers tag schema's index of subject in
// ref's repository (the tag sha256-<hex>); ErrNotFound if there is none.
func (s fetcherSource) tagSchemaIndex(ctx context.Context, ref string, subject digest.Digest) ([]byte, error) {
	spec, err := reference.Parse(ref)
	if err != nil {
		return nil, err
	}
	_, desc, err := s.f.Resolve(ctx, spec.Locator+":"+subject.Algorithm().String()+"-"+subject.Encoded())
	if err != nil {
		return nil, err
	}
	return s.fetchBlob(ctx, ref, desc, soci.MaxIndexManifest)
}

// fetchBlob reads a whole blob or manifest of at most max bytes, verified
// against desc (ErrDigestMismatch).
func (s fetcherSource) fetchBlob(ctx context.Context, ref string, desc ocispec.Descriptor, max int64) ([]byte, error) {
	if desc.Size > max {
		return nil, fmt.Errorf("%s is %d bytes (at most %d)", desc.Digest, desc.Size, max)
	}
	rc, err := s.f.Fetch(ctx, ref, desc)
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	b, err := io.ReadAll(io.LimitReader(rc, max+1))
	if err != nil {
		return nil, err
	}
	if int64(len(b)) > max {
		return nil, fmt.Errorf("%s is over %d bytes", desc.Digest, max)
	}
	return b, nil
}

// Artifact implements layer.ArtifactBlob: the zTOC the layer's descriptor names.
func (t *tailBlob) Artifact(ctx context.Context, d digest.Digest) ([]byte, error) {
	if raw, ok := t.localArtifact(d); ok {
		return raw, nil
	}
	ann := t.Descriptor().Annotations
	if ann[lazy.AnnotationZtocDigest] != d.String() {
		return nil, fmt.Errorf("layer %s names no blob %s", t.Descriptor().Digest, d)
	}
	size, err := strconv.ParseInt(ann[lazy.AnnotationZtocSize], 10, 64)
	if err != nil || size <= 0 {
		return nil, fmt.Errorf("zTOC %s: size %q", d, ann[lazy.AnnotationZtocSize])
	}
	return fetcherSource{f: t.f}.fetchBlob(ctx, t.ref, ocispec.Descriptor{MediaType: soci.ZtocMediaType, Digest: d, Size: size}, soci.MaxZtocSize)
}
