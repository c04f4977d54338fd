package remote

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

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

// annZtocRepo, on a layer descriptor, is the repository its zTOC is
// fetched from when that is not the image's: a trusted repository
// (WithTrustedSociRepositories). Only withZtoc sets it.
const annZtocRepo = "dev.lazysnap.soci.ztoc-repository"

// sociCache holds what Layer learnt of an image manifest's SOCI index,
// by the manifest's digest, and the manifests and indexes Layer read, by
// digest (content-addressed, so never stale): every layer of an image
// would read the same ones again, a round trip each. What the manifest's
// referrers said (a v1 index, or none: a negative entry) is kept for
// sociReferrersTTL, the Mounts of one pull of the image, since a node may
// publish an index later; an index the manifest names is kept until the
// cache is full. A lookup that failed (the registry unavailable) is not
// kept. It is bounded by dropping everything when full.
type sociCache struct {
	mu   sync.Mutex
	m    map[digest.Digest]sociLookup
	docs map[digest.Digest][]byte
	now  func() time.Time // time.Now; tests turn it
}

// sociReferrersTTL bounds how long what an image manifest's referrers
// said about its SOCI index is believed (containerd prepares an image's
// layers within seconds; a line-rate Pull looks nothing up).
const sociReferrersTTL = time.Minute

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
	idx  *soci.IndexManifest // nil: none
	why  string              // why there is none
	repo string              // where a v1 index and its zTOCs were found ("": ref's repository)
	// expires is when the cached lookup is forgotten (zero: when the
	// cache is full)
	expires time.Time
}

const sociCacheMax = 256

func newSociCache() *sociCache {
	return &sociCache{m: map[digest.Digest]sociLookup{}, docs: map[digest.Digest][]byte{}, now: time.Now}
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
	delete(out.Annotations, annZtocRepo)
	delete(out.Annotations, soci.AnnotationPackedDigest)
	delete(out.Annotations, soci.AnnotationPackedSize)
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
	if pd, psize, ok := soci.Packed(z.Annotations); ok {
		out.Annotations[soci.AnnotationPackedDigest] = pd.String()
		out.Annotations[soci.AnnotationPackedSize] = strconv.FormatInt(psize, 10)
	}
	if lk.repo != "" {
		out.Annotations[annZtocRepo] = lk.repo
	}
	return out
}

// sociIndex is findSociIndex's answer for the image manifest man, cached
// (sociCache).
func (s fetcherSource) sociIndex(ctx context.Context, ref string, man ocispec.Descriptor, ann map[string]string, siblings []ocispec.Descriptor) sociLookup {
	if lk, ok := s.soci.lookup(man.Digest); ok {
		return lk
	}
	lk, cache := s.findSociIndex(ctx, ref, man, ann, siblings)
	if cache {
		_, named := ann[soci.AnnotationIndexDigest]
		s.soci.put(man.Digest, lk, !named)
	}
	return lk
}

// lookup returns the cached lookup of manifest m, unless it expired.
func (c *sociCache) lookup(m digest.Digest) (sociLookup, bool) {
	if c == nil {
		return sociLookup{}, false
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	lk, ok := c.m[m]
	if ok && !lk.expires.IsZero() && !c.now().Before(lk.expires) {
		delete(c.m, m)
		return sociLookup{}, false
	}
	return lk, ok
}

// put caches the lookup of manifest m; one from the referrers expires
// after sociReferrersTTL.
func (c *sociCache) put(m digest.Digest, lk sociLookup, referrers bool) {
	if c == nil {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if referrers {
		lk.expires = c.now().Add(sociReferrersTTL)
	}
	if len(c.m) >= sociCacheMax {
		clear(c.m)
	}
	c.m[m] = lk
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
		from, why, cache := "", "", false
		if desc, from, why, cache = s.findV1Index(ctx, ref, man.Digest); desc.Digest == "" {
			return sociLookup{why: why}, cache
		}
		if from != "" {
			lk.repo, ref = from, from+"@"+man.Digest.String()
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
	lk.idx = idx
	return lk, true
}

// findV1Index finds the newest v1 SOCI index of the image manifest man of
// ref among the referrers of man in each trusted repository (in order),
// then in ref's own, where it is used only with WithSociV1 (or when that
// repository is trusted). from is the trusted repository it was found in
// ("" for ref's own; its zTOCs are there too); without one, why says why and cache whether that
// may be remembered.
func (s fetcherSource) findV1Index(ctx context.Context, ref string, man digest.Digest) (desc ocispec.Descriptor, from, why string, cache bool) {
	spec, err := reference.Parse(ref)
	if err != nil {
		return desc, "", fmt.Sprintf("SOCI index lookup: %v", err), true
	}
	own := spec.Locator
	cache = true
	var failed []string
	for _, repo := range s.trusted {
		if repo == own {
			continue
		}
		d, err := s.v1Referrer(ctx, repo, man)
		if err != nil {
			failed, cache = append(failed, fmt.Sprintf("%s: %v", repo, err)), false
		} else if d.Digest != "" {
			return d, repo, "", true
		}
	}
	d, err := s.v1Referrer(ctx, own, man)
	switch {
	case err != nil:
		failed, cache = append(failed, fmt.Sprintf("%s: %v", own, err)), false
	case d.Digest != "" && (s.sociV1 || slices.Contains(s.trusted, own)):
		return d, "", "", true
	case d.Digest != "":
		why = fmt.Sprintf("the image's only SOCI index, %s, is a v1 index among the manifest's referrers, which anyone who can push to the repository can add; v1 indexes are off ([soci] allow_v1_indexes) and %s is not a trusted repository ([soci] trusted_repositories)", d.Digest, own)
	}
	switch {
	case len(failed) > 0 && why == "":
		why = "SOCI index lookup: " + strings.Join(failed, "; ")
	case len(failed) > 0:
		why += "; SOCI index lookup: " + strings.Join(failed, "; ")
	case why == "":
		why = "the image has no SOCI index"
	}
	return ocispec.Descriptor{}, "", why, cache
}

// v1Referrer returns the newest v1 SOCI index among the referrers of
// subject in repo (the referrers API, else its tag schema), the zero
// descriptor if there is none. The tag schema is asked at once beside the
// API (and abandoned if the API answers): a registry without the API, whose
// answer is a 404, costs no round trip more than one with it (a layer
// that is not lazy waits for this lookup before its line-rate pull).
func (s fetcherSource) v1Referrer(ctx context.Context, repo string, subject digest.Digest) (ocispec.Descriptor, error) {
	type answer struct {
		b   []byte
		err error
	}
	tctx, cancel := context.WithCancel(ctx)
	defer cancel()
	tag := make(chan answer, 1)
	go func() {
		// the referrers tag schema (tag sha256-<hex>)
		b, err := s.tagSchemaIndex(tctx, repo+"@"+subject.String(), subject)
		tag <- answer{b, err}
	}()
	b, err := s.f.Referrers(ctx, repo, subject, soci.ArtifactTypeV1)
	if errors.Is(err, fetcher.ErrNotFound) {
		// no referrers API
		a := <-tag
		b, err = a.b, a.err
	} else {
		cancel()
		<-tag
	}
	if errors.Is(err, fetcher.ErrNotFound) {
		return ocispec.Descriptor{}, nil
	}
	if err != nil {
		return ocispec.Descriptor{}, err
	}
	var refs ocispec.Index
	if err := json.Unmarshal(b, &refs); err != nil {
		return ocispec.Descriptor{}, fmt.Errorf("referrers of %s: %w", subject, err)
	}
	return newestV1(refs.Manifests), nil
}

// newestV1 is the newest v1 SOCI index among referrers: by its created
// annotation (the indexes an FS publishes have one; the referrers API
// lists them in no set order), else the last listed (the tag schema
// appends); the zero descriptor if there is none.
func newestV1(referrers []ocispec.Descriptor) ocispec.Descriptor {
	var (
		desc ocispec.Descriptor
		at   time.Time
	)
	for _, m := range referrers {
		if m.ArtifactType != soci.ArtifactTypeV1 {
			continue
		}
		t, _ := time.Parse(time.RFC3339Nano, m.Annotations[ocispec.AnnotationCreated])
		if desc.Digest == "" || !t.Before(at) {
			desc, at = m, t
		}
	}
	return desc
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
	ref := t.ref
	if repo := ann[annZtocRepo]; repo != "" {
		ref = repo + "@" + d.String()
	}
	src := fetcherSource{f: t.f}
	if pd, psize, ok := soci.Packed(ann); ok && psize < size {
		// the packed zTOC, when the index names one: fewer bytes before
		// the mount; whatever goes wrong with it, the zTOC itself
		packed, err := src.fetchBlob(ctx, ref, ocispec.Descriptor{MediaType: soci.PackedMediaType, Digest: pd, Size: psize}, psize)
		if err == nil {
			if raw, err := soci.UnpackZtoc(packed, size, d); err == nil {
				return raw, nil
			}
		}
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
	}
	return src.fetchBlob(ctx, ref, ocispec.Descriptor{MediaType: soci.ZtocMediaType, Digest: d, Size: size}, soci.MaxZtocSize)
}
