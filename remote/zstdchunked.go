package remote

import (
	"context"
	"fmt"
	"io"

	lfs "github.com/lazysnap/lazysnap/fs"
	"github.com/lazysnap/lazysnap/index"
	"github.com/lazysnap/lazysnap/layer"
	"github.com/lazysnap/lazysnap/snapshotter"
	"github.com/lazysnap/lazysnap/zstdchunked"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// zstdChunkedFormat is zstd:chunked (podman, CRI-O, containers-storage): a
// zstd layer whose files are frames of their own and whose TOC, a
// compressed skippable frame near its end, is verified against the
// manifest-checksum annotation (either layout's name). Containerd does not
// pass those annotations as snapshot labels, so Mount reads them from the
// image manifest (FS.descriptor). The eStargz library's converter
// annotates its zstd:chunked layers with an eStargz TOC digest as well:
// eStargz claims those, and its Open hands them to this format, which
// verifies the TOC JSON against that digest.
type zstdChunkedFormat struct {
	maxEntries int // 0: estargz.DefaultMaxEntries
}

var (
	_ Format      = zstdChunkedFormat{}
	_ lfs.Decoder = (*zstdchunked.Decoder)(nil)
)

func (zstdChunkedFormat) Name() string { return "zstd:chunked" }

func (zstdChunkedFormat) IndexDigest(desc ocispec.Descriptor) (digest.Digest, bool, error) {
	d, ok, err := zstdchunked.ManifestDigest(desc.Annotations)
	if err != nil {
		return "", true, fmt.Errorf("%w: %w", snapshotter.ReasonNotLazy, err)
	}
	return d, ok, nil
}

// Open decodes the TOC straight into the index, taking the footer (and
// a small layer's whole TOC) from the blob's tail when it has one.
func (f zstdChunkedFormat) Open(ctx context.Context, b Blob, toc digest.Digest) (*index.Index, lfs.Decoder, error) {
	o := zstdchunked.Options{Digest: toc, MaxEntries: f.maxEntries}
	tb, _ := b.(*tailBlob)
	if tb != nil {
		o.Tail = tb.Tail()
	}
	sr := io.NewSectionReader(b, 0, b.Size())
	idx, err := index.Decode(func(sink layer.Sink) (layer.Info, error) {
		info, _, err := zstdchunked.DecodeTOC(sr, sink, o)
		return info.LayerInfo(), err
	})
	if tb != nil {
		tb.trimTail(mountTailSize)
	}
	if err != nil {
		return nil, nil, err
	}
	return idx, &zstdchunked.Decoder{}, nil
}
