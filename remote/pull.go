package remote

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/lazysnap/lazysnap/estargz"
	"github.com/lazysnap/lazysnap/snapshotter"
	"github.com/lazysnap/lazysnap/soci"
	"github.com/lazysnap/lazysnap/soci/lazy"
	"github.com/lazysnap/lazysnap/unpack"
	"github.com/lazysnap/lazysnap/zstdchunked"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// PullOptions configures the line-rate pulls of layers that are not lazy
// (FS.Pull).
type PullOptions struct {
	// Connections is how many range requests one layer's blob is fetched
	// over at once (default 4); 1 fetches it as one stream.
	Connections int
	// PartSize is the bytes of one such request (default 4 MiB); a blob
	// of at most two parts is one stream.
	PartSize int64
	// Concurrency is how many layers are pulled at once (default 3);
	// more wait their turn.
	Concurrency int
	// NoIndex skips building the zTOC of a gzip layer on the way (by
	// default it is kept, so that a later Mount of the layer on this node
	// is lazy).
	NoIndex bool
	// Sink, if set, opens a copy of each pulled blob elsewhere
	// (containerd's content store), written while the blob arrives and
	// committed once it is verified. ctx is the Pull's (it carries
	// containerd's namespace when containerd said it). Its failure does
	// not fail the pull: PullInfo.Stored says why.
	Sink func(ctx context.Context, ref string, desc ocispec.Descriptor) (BlobSink, error)
}

// BlobSink is one copy of a blob being written (PullOptions.Sink).
type BlobSink interface {
	io.Writer
	// Commit keeps what was written as the blob (it checks the digest);
	// Abort drops it. One of the two is called once.
	Commit(ctx context.Context) error
	Abort()
}

func (o PullOptions) withDefaults() PullOptions {
	if o.Connections <= 0 {
		o.Connections = 4
	}
	if o.PartSize <= 0 {
		o.PartSize = 4 << 20
	}
	if o.Concurrency <= 0 {
		o.Concurrency = 3
	}
	return o
}

// blobPuller is a Source that fetches a whole blob in order
// (fetcherSource: fetcher.Blob.ParallelCopy).
type blobPuller interface {
	// PullBlob opens the blob desc for writing out whole.
	PullBlob(ctx context.Context, ref string, desc ocispec.Descriptor, conns int, part int64) (wholeBlob, error)
	// plainLayer is Source.Layer without the SOCI index lookup: the
	// Mount before the Pull looked already, and a Pull needs only the
	// manifest's media type and size.
	plainLayer(ctx context.Context, ref string, dg digest.Digest) (ocispec.Descriptor, error)
}

// wholeBlob is a blob written out in order: all of it (over conns range
// requests), or what follows an offset (one stream).
type wholeBlob struct {
	size int64
	all  func(ctx context.Context, w io.Writer) error
	from func(ctx context.Context, off int64, w io.Writer) error
}

func (s fetcherSource) PullBlob(ctx context.Context, ref string, desc ocispec.Descriptor, conns int, part int64) (wholeBlob, error) {
	b, err := s.f.Blob(ctx, ref, desc)
	if err != nil {
		return wholeBlob{}, err
	}
	return wholeBlob{
		size: b.Size(),
		all:  func(ctx context.Context, w io.Writer) error { return b.ParallelCopy(ctx, w, conns, part) },
		from: func(ctx context.Context, off int64, w io.Writer) error {
			if off >= b.Size() {
				return nil
			}
			return b.Copy(ctx, off, b.Size()-off, w)
		},
	}, nil
}

// PullInfo is one layer pulled at line rate (or being pulled).
type PullInfo struct {
	Digest digest.Digest
	Ref    string
	// NotLazy is why the layer could not be mounted lazily.
	NotLazy string
	// Size is the blob's; Fetched what has arrived so far.
	Size, Fetched int64
	Started       time.Time
	// Duration is how long the pull took; zero while it runs.
	Duration time.Duration
	// Err is why it failed, "" if it did not (or runs).
	Err string
	// Ztoc says whether the pass left a local zTOC of the layer, or why
	// not ("" while it runs).
	Ztoc string
	// Spooled: the blob was downloaded ahead, while a layer below was
	// pulled.
	Spooled bool
	// Stored says whether the blob was also stored by PullOptions.Sink
	// ("stored", or why not); empty without a Sink.
	Stored string
	// Published says where the SOCI index with the layer's zTOC was
	// pushed (Options.Publish: "publishing", "published in SOCI index
	// DIGEST to REPOSITORY", or "not published: ERROR"); empty without.
	Published string
}

// pullLog keeps the pulls in flight and the latest done, by layer digest.
type pullLog struct {
	mu sync.Mutex
	m  map[digest.Digest]*pullEntry
}

type pullEntry struct {
	info    PullInfo
	fetched *atomic.Int64
}

// maxPulls bounds the pulls remembered.
const maxPulls = 256

func (l *pullLog) start(info PullInfo) *pullEntry {
	e := &pullEntry{info: info, fetched: new(atomic.Int64)}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.m == nil {
		l.m = map[digest.Digest]*pullEntry{}
	}
	l.m[info.Digest] = e
	if len(l.m) > maxPulls {
		var oldest digest.Digest
		for d, o := range l.m {
			if o.info.Duration > 0 && (oldest == "" || o.info.Started.Before(l.m[oldest].info.Started)) {
				oldest = d
			}
		}
		delete(l.m, oldest)
	}
	return e
}

func (l *pullLog) finish(e *pullEntry, err error, ztoc string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	e.info.Duration = max(time.Since(e.info.Started), time.Nanosecond)
	e.info.Ztoc = ztoc
	if err != nil {
		e.info.Err = err.Error()
	}
}

func (l *pullLog) stored(e *pullEntry, s string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	e.info.Stored = s
}

func (l *pullLog) published(e *pullEntry, s string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	e.info.Published = s
}

func (l *pullLog) list() []PullInfo {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := make([]PullInfo, 0, len(l.m))
	for _, e := range l.m {
		i := e.info
		i.Fetched = e.fetched.Load()
		out = append(out, i)
	}
	slices.SortFunc(out, func(a, b PullInfo) int { return a.Started.Compare(b.Started) })
	return out
}

// Pulls lists the layers pulled at line rate, in flight and done, oldest
// first.
func (r *FS) Pulls() []PullInfo { return r.pulls.list() }

var _ snapshotter.Puller = (*FS)(nil)

// Pull implements snapshotter.Puller: the layer the labels name, which a
// Mount found not lazy, is fetched (Options.Pull.Connections range
// requests at once), inflated and applied to dir while it arrives, and
// checked against its digest; a gzip layer's zTOC, built on the way, is
// kept under Root/ztoc, so that the next Mount of the layer is lazy.
func (r *FS) Pull(ctx context.Context, req snapshotter.PullRequest) (snapshotter.PullResult, error) {
	src, err := snapshotter.ParseLayerSource(req.Labels)
	if err != nil {
		return snapshotter.PullResult{}, err
	}
	// Close waits for the pull, and ends it
	if err := r.enter(); err != nil {
		return snapshotter.PullResult{}, err
	}
	defer r.leave()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	defer context.AfterFunc(r.ctx, cancel)()
	bp, ok := r.src.(blobPuller)
	if !ok {
		return snapshotter.PullResult{}, fmt.Errorf("layer %s: %w", src.Digest, errNoPuller)
	}
	// the manifest's descriptor: labels that name a lazy format's index
	// give no media type, which the unpack needs
	desc, err := bp.plainLayer(ctx, src.Ref, src.Digest)
	if err != nil {
		return snapshotter.PullResult{}, fmt.Errorf("layer %s of %s: %w", src.Digest, src.Ref, err)
	}
	desc = withoutOwnAnnotations(desc)
	notLazy := req.NotLazy
	if _, perr := pickFormat(desc, r.opts.MaxEntries, r.opts.IndexMemory); perr != nil && notLazy == "" {
		notLazy = perr.Error()
	}
	opts := r.opts.Pull
	var (
		e    *pullEntry
		kept bool // e kept a zTOC
	)
	if r.opts.Publish != nil {
		// runs after finish: the pull is done
		end := r.publishBegin(src.Ref)
		top := len(src.Layers) > 0 && src.Layers[len(src.Layers)-1] == src.Digest
		defer func() { end(e, kept, top) }()
	}
	// a spool already downloading the blob holds a slot of the budget
	sp := r.spools.take(src.Digest)
	if sp != nil {
		defer r.spools.done(src.Digest, sp)
	} else {
		select {
		case r.pullSlots <- struct{}{}:
		case <-ctx.Done():
			return snapshotter.PullResult{}, ctx.Err()
		}
		defer func() { <-r.pullSlots }()
	}
	// the layers above are downloaded after this one: the end of its
	// download (or of its spool's) starts theirs
	var below <-chan struct{}
	fetchEnded := func() {}
	if sp != nil {
		below = sp.ended
	} else {
		ch := make(chan struct{})
		below, fetchEnded = ch, sync.OnceFunc(func() { close(ch) })
		defer fetchEnded()
	}
	r.spoolAhead(ctx, bp, src, below)
	e = r.pulls.start(PullInfo{Digest: src.Digest, Ref: src.Ref, NotLazy: notLazy, Size: desc.Size, Started: time.Now(), Spooled: sp != nil})
	wb, err := bp.PullBlob(ctx, src.Ref, desc, opts.Connections, opts.PartSize)
	if err != nil {
		r.pulls.finish(e, err, "")
		return snapshotter.PullResult{}, fmt.Errorf("layer %s: %w", src.Digest, err)
	}
	size, copyBlob := wb.size, func(ctx context.Context, w io.Writer) error {
		defer fetchEnded()
		return wb.all(ctx, w)
	}
	if sp != nil {
		copyBlob = func(ctx context.Context, w io.Writer) error { return sp.copyTo(ctx, w, wb.from) }
	}
	desc.Size = size
	r.pulls.mu.Lock()
	e.info.Size = size
	r.pulls.mu.Unlock()
	uopts := unpack.Options{Parents: req.Parents, Index: !opts.NoIndex, Fetched: e.fetched}
	var sink BlobSink
	if opts.Sink != nil {
		var serr error
		if sink, serr = opts.Sink(ctx, src.Ref, desc); serr != nil {
			r.pulls.stored(e, "not stored: "+serr.Error())
		} else {
			uopts.Blob = sink
		}
	}
	res, err := unpack.Unpack(ctx, req.Dir, desc, copyBlob, uopts)
	if sink != nil {
		switch {
		case err != nil:
			sink.Abort()
		case res.BlobErr != nil:
			sink.Abort()
			r.pulls.stored(e, "not stored: "+res.BlobErr.Error())
		default:
			if cerr := sink.Commit(context.WithoutCancel(ctx)); cerr != nil {
				r.pulls.stored(e, "not stored: "+cerr.Error())
			} else {
				r.pulls.stored(e, "stored")
			}
		}
	}
	if err != nil {
		r.pulls.finish(e, err, "")
		return snapshotter.PullResult{}, fmt.Errorf("layer %s: %w", src.Digest, err)
	}
	ztoc := "not built (pull.no_index)"
	switch {
	case res.Ztoc != nil:
		if werr := r.saveZtoc(src.Digest, res.Ztoc); werr != nil {
			ztoc = "not kept: " + werr.Error()
		} else {
			ztoc, kept = "kept", true
		}
	case res.IndexErr != nil:
		ztoc = "not built: " + res.IndexErr.Error()
	case !opts.NoIndex:
		ztoc = "not built: not a gzip layer"
	}
	r.pulls.finish(e, nil, ztoc)
	return snapshotter.PullResult{DiffID: res.DiffID, Bytes: size}, nil
}

// The local zTOCs: Root/ztoc/<algorithm>-<hex of the layer digest>, each
// built by a Pull from bytes it checked against the layer digest, so that
// a Mount trusts it as it trusts an index whose digest the image names.
const (
	ztocDir = "ztoc"
	// annZtocLocal marks a layer descriptor whose zTOC is the local one.
	annZtocLocal = "dev.lazysnap.soci.ztoc-local"
)

func (r *FS) ztocPath(layer digest.Digest) string {
	return filepath.Join(r.opts.Root, ztocDir, layer.Algorithm().String()+"-"+layer.Encoded())
}

// saveZtoc writes z as the local zTOC of layer (a temporary file renamed
// into place).
func (r *FS) saveZtoc(layer digest.Digest, z *soci.Ztoc) error {
	if err := layer.Validate(); err != nil {
		return err
	}
	p := r.ztocPath(layer)
	if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
		return err
	}
	f, err := os.CreateTemp(filepath.Dir(p), ".tmp-")
	if err != nil {
		return err
	}
	_, err = f.Write(soci.Marshal(z))
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(f.Name(), p)
	}
	if err != nil {
		os.Remove(f.Name())
	}
	return err
}

// localZtoc returns desc annotated with its local zTOC (lazy.AnnotationZtocDigest,
// lazy.AnnotationZtocSize, annZtocLocal) and the zTOC's bytes, when there is one and
// the layer is in no other lazy format: the local zTOC comes before one
// the image's SOCI index names. Otherwise desc is returned as it is (but
// for annZtocLocal, which only this sets), with nil.
func (r *FS) localZtoc(desc ocispec.Descriptor) (ocispec.Descriptor, []byte) {
	desc = withoutLocalMark(desc)
	if _, ok := desc.Annotations[estargz.TOCJSONDigestAnnotation]; ok {
		return desc, nil
	}
	if _, ok, _ := zstdchunked.ManifestDigest(desc.Annotations); ok {
		return desc, nil
	}
	if desc.Digest.Validate() != nil {
		return desc, nil
	}
	raw, err := os.ReadFile(r.ztocPath(desc.Digest))
	if err != nil || int64(len(raw)) > soci.MaxZtocSize {
		return desc, nil
	}
	ann := make(map[string]string, len(desc.Annotations)+3)
	for k, v := range desc.Annotations {
		ann[k] = v
	}
	delete(ann, annSociNone)
	ann[lazy.AnnotationZtocDigest] = digest.FromBytes(raw).String()
	ann[lazy.AnnotationZtocSize] = strconv.Itoa(len(raw))
	ann[annZtocLocal] = "true"
	desc.Annotations = ann
	return desc, raw
}

// withoutLocalMark drops annZtocLocal, which only localZtoc sets: a
// manifest naming it is not believed.
func withoutLocalMark(desc ocispec.Descriptor) ocispec.Descriptor {
	if _, ok := desc.Annotations[annZtocLocal]; !ok {
		return desc
	}
	ann := make(map[string]string, len(desc.Annotations))
	for k, v := range desc.Annotations {
		if k != annZtocLocal {
			ann[k] = v
		}
	}
	desc.Annotations = ann
	return desc
}

// withoutOwnAnnotations is desc as the manifest gives it: without the
// annotations lazysnap's Source adds (the SOCI zTOC it found), for the
// blob request of a pull.
func withoutOwnAnnotations(desc ocispec.Descriptor) ocispec.Descriptor {
	ann := map[string]string{}
	for k, v := range desc.Annotations {
		switch k {
		case lazy.AnnotationZtocDigest, lazy.AnnotationZtocSize, annZtocLocal, annZtocRepo:
		default:
			ann[k] = v
		}
	}
	desc.Annotations = ann
	return desc
}

// setArtifact makes Artifact answer d with raw (a local zTOC) instead of
// fetching it. It must be called before the blob is shared.
func (t *tailBlob) setArtifact(d digest.Digest, raw []byte) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.localDigest, t.local = d, raw
}

// localArtifact returns the bytes setArtifact gave for d, if any.
func (t *tailBlob) localArtifact(d digest.Digest) ([]byte, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.local == nil || t.localDigest != d {
		return nil, false
	}
	if digest.FromBytes(t.local) != d {
		return nil, false
	}
	return t.local, true
}

// errNoPuller: the FS was asked to pull through a Source that cannot.
var errNoPuller = errors.New("remote: the source cannot pull whole blobs")
