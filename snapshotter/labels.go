package snapshotter

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/containerd/errdefs"
	"github.com/lazysnap/lazysnap/internal/descriptor"
	"github.com/opencontainers/go-digest"
)

// Labels of the remote-snapshot protocol.
//
// containerd passes a snapshotter only the labels named
// "containerd.io/snapshot.ref" or starting with "containerd.io/snapshot/"
// (snapshots.FilterInheritedLabels); every other layer annotation, such as
// io.containers.estargz.uncompressed-size, never reaches Prepare.
const (
	// LabelTargetSnapshotRef names the committed snapshot (the layer's chain
	// ID) that the client would like Prepare to produce. Set by containerd's
	// unpacker (pkg/unpack, and unpacker.go in containerd 1.6) on every
	// layer it unpacks. Its presence is what makes a Prepare a query for a
	// remote snapshot.
	LabelTargetSnapshotRef = "containerd.io/snapshot.ref"

	// LabelRemote marks a committed snapshot whose fs directory is a remote
	// (FUSE) mount; its value is RemoteValue. The snapshotter sets it; New
	// mounts every snapshot carrying it again. The name and value are the
	// ones Stargz Snapshotter uses, so tools that look for it keep working.
	LabelRemote = "containerd.io/snapshot/remote"
	// RemoteValue is the value of LabelRemote.
	RemoteValue = "remote snapshot"

	// LabelLineRate marks a committed (ordinary) snapshot that the
	// snapshotter's Puller pulled itself, its value "true": a layer that
	// was not lazy and that containerd never fetched.
	LabelLineRate = "containerd.io/snapshot/lazysnap.line-rate"
)

// Labels that `ctr-remote image rpull` (Stargz Snapshotter's
// source.AppendDefaultLabelsHandlerWrapper) puts on every layer descriptor,
// and which containerd then passes to Prepare.
const (
	// LabelStargzReference is the image reference the layer was pulled by.
	LabelStargzReference = "containerd.io/snapshot/remote/stargz.reference"
	// LabelStargzDigest is the digest of the (compressed) layer blob.
	LabelStargzDigest = "containerd.io/snapshot/remote/stargz.digest"
	// LabelStargzLayers is a comma-separated list of the digests of this
	// layer and the layers above it in the manifest, possibly truncated to
	// fit containerd's label size limit.
	LabelStargzLayers = "containerd.io/snapshot/remote/stargz.layers"
	// LabelStargzPrefetch is the prefetch size in bytes the client asks for
	// (ctr-remote sends 10 MiB).
	LabelStargzPrefetch = "containerd.io/snapshot/remote/stargz.prefetch"
	// LabelStargzSkipVerify is "true" when the client asked to skip content
	// verification (ctr-remote --skip-content-verify). lazysnap's FUSE
	// layer verifies every chunk regardless; the label is only reported.
	LabelStargzSkipVerify = "containerd.io/snapshot/remote/stargz.skipverify"
	// LabelRemoteURLs is a comma-separated list of the layer descriptor's
	// URLs (foreign layers), set by ctr-remote and nerdctl.
	LabelRemoteURLs = "containerd.io/snapshot/remote/urls"
	// LabelRemoteURLsPrefix followed by an index i holds the URLs of the
	// i-th layer of LabelStargzLayers (or LabelCRIImageLayers).
	LabelRemoteURLsPrefix = "containerd.io/snapshot/remote/urls."
)

// Labels that containerd's CRI plugin (pkg/snapshotters
// AppendInfoHandlerWrapper, also used by nerdctl and other clients despite the
// "cri" in the names) puts on every layer descriptor.
const (
	// LabelCRIImageRef is the image reference.
	LabelCRIImageRef = "containerd.io/snapshot/cri.image-ref"
	// LabelCRIManifestDigest is the digest of the image manifest.
	LabelCRIManifestDigest = "containerd.io/snapshot/cri.manifest-digest"
	// LabelCRILayerDigest is the digest of the (compressed) layer blob.
	LabelCRILayerDigest = "containerd.io/snapshot/cri.layer-digest"
	// LabelCRIImageLayers is a comma-separated list of the digests of this
	// layer and the layers above it, possibly truncated.
	LabelCRIImageLayers = "containerd.io/snapshot/cri.image-layers"
)

// LabelTOCDigest is the eStargz layer annotation holding the digest of the
// layer's TOC JSON. lazysnap convert and ctr-remote's converter write it on
// layer descriptors; containerd passes it on because of its prefix. The
// FileSystem should check the TOC against it when it is present.
const LabelTOCDigest = "containerd.io/snapshot/stargz/toc.digest"

// LabelTailSize is the layer annotation (lazysnap convert's) giving how
// many bytes of the blob's end hold its index and footer, so that the
// Mount reads them in one request. A hint: the index is verified as
// always. (estargz.TailSizeAnnotation.)
const LabelTailSize = "containerd.io/snapshot/lazysnap/tail-size"

// LayerSource is what a snapshot's labels say about where its layer lives.
type LayerSource struct {
	// Ref is the image reference (CRI or Stargz label).
	Ref string
	// Digest is the compressed layer blob's digest.
	Digest digest.Digest
	// TOCDigest is the eStargz TOC digest; empty when not labelled.
	TOCDigest digest.Digest
	// TailSize is LabelTailSize's value; 0 when not labelled.
	TailSize int64
	// Manifest is the manifest digest; empty unless the CRI labels carry it.
	Manifest digest.Digest
	// Layers lists this layer and the ones above it (for prefetching
	// neighbours); empty when not labelled.
	Layers []digest.Digest
	// URLs are the layer descriptor's URLs; empty for ordinary layers.
	URLs []string
	// ChainID is the target snapshot name (LabelTargetSnapshotRef).
	ChainID string
	// PrefetchSize is the requested prefetch size in bytes, -1 when not
	// labelled (the layer's prefetch landmark then decides).
	PrefetchSize int64
	// SkipVerify reports LabelStargzSkipVerify.
	SkipVerify bool
}

// ParseLayerSource reads a LayerSource from snapshot labels. The CRI labels
// are used when both the image reference and the layer digest are there,
// else the Stargz labels (the order Stargz Snapshotter uses). A missing
// reference or digest is an error wrapping ReasonMissingLabels, a malformed
// value one wrapping ReasonInvalidLabels; both also wrap
// errdefs.ErrInvalidArgument.
func ParseLayerSource(labels map[string]string) (LayerSource, error) {
	src := LayerSource{ChainID: labels[LabelTargetSnapshotRef], PrefetchSize: -1}
	refKey, digestKey, layersKey := sourceKeys(labels)
	src.Ref = labels[refKey]
	if src.Ref == "" || labels[digestKey] == "" {
		return LayerSource{}, fmt.Errorf("no image reference and layer digest labels (%s, %s or %s, %s): %w",
			LabelCRIImageRef, LabelCRILayerDigest, LabelStargzReference, LabelStargzDigest,
			labelError(ReasonMissingLabels))
	}
	var err error
	if src.Digest, err = parseDigest(digestKey, labels[digestKey]); err != nil {
		return LayerSource{}, err
	}
	if v, ok := labels[LabelTOCDigest]; ok {
		if src.TOCDigest, err = parseDigest(LabelTOCDigest, v); err != nil {
			return LayerSource{}, err
		}
	}
	if v, ok := labels[LabelTailSize]; ok {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || n <= 0 {
			return LayerSource{}, fmt.Errorf("label %s=%q: not a size: %w", LabelTailSize, v, labelError(ReasonInvalidLabels))
		}
		src.TailSize = n
	}
	if v, ok := labels[LabelCRIManifestDigest]; ok && layersKey == LabelCRIImageLayers {
		if src.Manifest, err = parseDigest(LabelCRIManifestDigest, v); err != nil {
			return LayerSource{}, err
		}
	}
	if v := labels[layersKey]; v != "" {
		for _, s := range strings.Split(v, ",") {
			d, err := parseDigest(layersKey, s)
			if err != nil {
				return LayerSource{}, err
			}
			src.Layers = append(src.Layers, d)
		}
	}
	if v := labels[LabelRemoteURLs]; v != "" {
		src.URLs = strings.Split(v, ",")
	}
	if v, ok := labels[LabelStargzPrefetch]; ok {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || n < 0 {
			return LayerSource{}, fmt.Errorf("label %s=%q: not a size: %w", LabelStargzPrefetch, v, labelError(ReasonInvalidLabels))
		}
		src.PrefetchSize = n
	}
	if v, ok := labels[LabelStargzSkipVerify]; ok {
		b, err := strconv.ParseBool(v)
		if err != nil {
			return LayerSource{}, fmt.Errorf("label %s=%q: not a boolean: %w", LabelStargzSkipVerify, v, labelError(ReasonInvalidLabels))
		}
		src.SkipVerify = b
	}
	return src, nil
}

// sourceOf returns the image reference and layer digest labels as given,
// chosen as ParseLayerSource chooses them, whether or not they parse.
func sourceOf(labels map[string]string) (ref, digest string) {
	refKey, digestKey, _ := sourceKeys(labels)
	return labels[refKey], labels[digestKey]
}

// sourceKeys names the labels that say where the layer lives: the CRI
// ones when both the image reference and the layer digest are there, else
// the Stargz ones.
func sourceKeys(labels map[string]string) (refKey, digestKey, layersKey string) {
	if labels[LabelCRIImageRef] != "" && labels[LabelCRILayerDigest] != "" {
		return LabelCRIImageRef, LabelCRILayerDigest, LabelCRIImageLayers
	}
	return LabelStargzReference, LabelStargzDigest, LabelStargzLayers
}

func parseDigest(key, v string) (digest.Digest, error) {
	d := digest.Digest(v)
	if err := descriptor.Digest(d); err != nil {
		return "", fmt.Errorf("label %s=%q: %v: %w", key, v, err, labelError(ReasonInvalidLabels))
	}
	return d, nil
}

// labelError is a label problem: both a fallback Reason and an
// errdefs.ErrInvalidArgument.
func labelError(r Reason) error {
	return fmt.Errorf("%w (%w)", r, errdefs.ErrInvalidArgument)
}

// isRemote reports whether labels mark a remote snapshot.
func isRemote(labels map[string]string) bool {
	_, ok := labels[LabelRemote]
	return ok
}

// isSourceLabel reports whether a label describes a remote layer's source;
// Update keeps these on remote snapshots so that they can be restored.
func isSourceLabel(k string) bool {
	return k == LabelRemote || k == LabelTargetSnapshotRef || k == LabelTOCDigest ||
		strings.HasPrefix(k, "containerd.io/snapshot/remote/") ||
		strings.HasPrefix(k, "containerd.io/snapshot/cri.")
}
