package convert

import (
	"context"
	"errors"
	"fmt"
	"github.com/lazysnap/lazysnap/soci"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"

	"github.com/containerd/containerd/v2/core/content"
	"github.com/containerd/containerd/v2/core/images"
	"github.com/containerd/containerd/v2/core/remotes"
	"github.com/containerd/containerd/v2/core/remotes/docker"
	remoteerrors "github.com/containerd/containerd/v2/core/remotes/errors"
	"github.com/containerd/containerd/v2/pkg/reference"
	"github.com/containerd/containerd/v2/plugins/content/local"
	"github.com/containerd/errdefs"
	"github.com/containerd/log"
	"github.com/containerd/platforms"
	"github.com/lazysnap/lazysnap/internal/descriptor"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"github.com/sirupsen/logrus"
	"golang.org/x/sync/semaphore"
)

var (
	// ErrRef means a string is not a usable image reference.
	ErrRef = errors.New("convert: invalid image reference")
	// ErrPull means an image could not be read from its registry.
	ErrPull = errors.New("convert: pull failed")
	// ErrPush means an image could not be written to its registry.
	ErrPush = errors.New("convert: push failed")
	// ErrPushDenied means the registry, or the hosts configuration,
	// refused the push: no host of the registry has the push capability,
	// or the registry answered 401 or 403. It wraps ErrPush.
	ErrPushDenied = fmt.Errorf("%w: refused", ErrPush)
)

// Location prefixes that say what a location is, as skopeo spells them.
const (
	RegistryPrefix = "docker://"
	LayoutPrefix   = "oci:"
)

// transferConcurrency bounds the blobs fetched or pushed at once.
const transferConcurrency = 4

// imageNameAnnotation is the index.json annotation containerd's image
// import takes an image's name from.
const imageNameAnnotation = images.AnnotationImageName

// Location is where an image is read from or written to: a registry
// reference or a local OCI layout.
type Location struct {
	// Ref is a host-qualified image reference ("registry.example/app:1",
	// "docker.io/library/busybox:1.36", "host/app@sha256:..."), normalised
	// by ParseLocation. When set, Path is ignored.
	Ref string
	// Path is an OCI image layout directory, or an archive of one if it
	// ends in ".tar".
	Path string
}

func (l Location) String() string {
	if l.Ref != "" {
		return RegistryPrefix + l.Ref
	}
	return LayoutPrefix + l.Path
}

// ParseLocation tells a registry reference from a local path, by these
// rules in order (the same string always means the same thing, whatever
// exists on disk):
//
//  1. "docker://REF" is a registry reference, "oci:PATH" a local path.
//  2. A string that is "." or "..", or starts with "/", "./" or "../", is a
//     local path.
//  3. A string whose part before the first "/" is a registry host (it
//     holds a "." or a ":", or is "localhost") and that has a "/" is a
//     registry reference: "127.0.0.1:5000/app:1", "docker.io/library/x:y".
//  4. Anything else ("out", "images/app", "app.tar", "app:1") is a local
//     path.
//
// A reference without a tag or digest gets ":latest", and a Docker Hub
// name of one component gets "library/".
func ParseLocation(s string) (Location, error) {
	if ref, ok := strings.CutPrefix(s, RegistryPrefix); ok {
		n, err := NormalizeRef(ref)
		return Location{Ref: n}, err
	}
	if p, ok := strings.CutPrefix(s, LayoutPrefix); ok {
		if p == "" {
			return Location{}, fmt.Errorf("%w: %q: empty path", ErrLayout, s)
		}
		return Location{Path: p}, nil
	}
	if s == "" {
		return Location{}, fmt.Errorf("%w: empty location", ErrLayout)
	}
	if !LooksLikeRef(s) {
		return Location{Path: s}, nil
	}
	n, err := NormalizeRef(s)
	return Location{Ref: n}, err
}

// LooksLikeRef reports whether ParseLocation takes s, without a prefix,
// for a registry reference (rules 2 and 3).
func LooksLikeRef(s string) bool {
	if s == "." || s == ".." || strings.HasPrefix(s, "/") || strings.HasPrefix(s, "./") || strings.HasPrefix(s, "../") {
		return false
	}
	host, rest, ok := strings.Cut(s, "/")
	return ok && rest != "" && (strings.ContainsAny(host, ".:") || host == "localhost")
}

// NormalizeRef checks a host-qualified image reference and returns it with
// ":latest" added when it has neither tag nor digest, and "library/" when
// it names a Docker Hub image of one component.
func NormalizeRef(s string) (string, error) {
	spec, err := reference.Parse(s)
	if err != nil {
		return "", fmt.Errorf("%w: %q: %v", ErrRef, s, err)
	}
	host := spec.Hostname()
	repo := strings.TrimPrefix(spec.Locator, host+"/")
	if repo == "" || repo == spec.Locator || strings.ContainsAny(repo, ":@") {
		return "", fmt.Errorf("%w: %q: want HOST/REPOSITORY[:TAG][@DIGEST]", ErrRef, s)
	}
	if host == "docker.io" && !strings.Contains(repo, "/") {
		spec.Locator = host + "/library/" + repo
	}
	if spec.Object == "" {
		spec.Object = "latest"
	}
	if dgst := spec.Digest(); dgst != "" {
		if err := dgst.Validate(); err != nil {
			return "", fmt.Errorf("%w: %q: digest: %v", ErrRef, s, err)
		}
	}
	return spec.String(), nil
}

// PullReport describes an image fetched from a registry.
type PullReport struct {
	Ref   string
	Root  ocispec.Descriptor // the index or manifest the reference names
	Blobs int                // blobs fetched (non-distributable layers are not)
	Bytes int64
}

// PushReport describes an image written to a registry.
type PushReport struct {
	Ref           string             // as pushed, with the root's digest
	Root          ocispec.Descriptor // the index or manifest tagged
	Uploaded      int                // blobs and manifests uploaded
	UploadedBytes int64
	Existing      int // blobs and manifests the registry had already
}

// TransferReport describes one blob pulled or pushed.
type TransferReport struct {
	Ref      string
	Desc     ocispec.Descriptor
	Push     bool // pushed, not pulled
	Existing bool // not uploaded: the registry had it
}

// Pull fetches the image ref names (every platform of an index, or those
// of opts.Platforms) from its
// registry through opts.Resolver and writes it to dir as an OCI image
// layout whose index.json names it. dir must be empty or not exist; after
// a failure it holds what was fetched (no index.json), for the caller to
// remove. Non-distributable (foreign) layers are not fetched.
func Pull(ctx context.Context, ref, dir string, opts Options) (*PullReport, error) {
	name, err := NormalizeRef(ref)
	if err != nil {
		return nil, err
	}
	if opts.Resolver == nil {
		return nil, fmt.Errorf("%w: %s: no Options.Resolver", ErrPull, name)
	}
	if ents, err := os.ReadDir(dir); err == nil && len(ents) > 0 {
		return nil, fmt.Errorf("%w: pulling %s: %s is not empty", ErrLayout, name, dir)
	}
	ctx = quiet(ctx)
	fail := func(what string, err error) (*PullReport, error) {
		return nil, fmt.Errorf("%w: %s: %s: %w", ErrPull, name, what, err)
	}
	resolved, root, err := opts.Resolver.Resolve(ctx, name)
	if err != nil {
		return fail("resolving", err)
	}
	if err := descriptor.Validate(root); err != nil {
		return fail("resolved", err)
	}
	fetcher, err := opts.Resolver.Fetcher(ctx, resolved)
	if err != nil {
		return fail("fetcher", err)
	}
	store, err := local.NewStore(dir)
	if err != nil {
		return nil, err
	}
	rep := &PullReport{Ref: name, Root: root}
	notify := opts.transferReporter()
	var mu sync.Mutex
	fetch := remotes.FetchHandler(store, fetcher)
	counted := images.HandlerFunc(func(ctx context.Context, d ocispec.Descriptor) ([]ocispec.Descriptor, error) {
		if err := descriptor.Validate(d); err != nil { // a manifest's or an index's child
			return nil, err
		}
		if _, err := fetch(ctx, d); err != nil {
			return nil, fmt.Errorf("%s %s: %w", kind(d.MediaType), d.Digest, err)
		}
		mu.Lock()
		rep.Blobs++
		rep.Bytes += d.Size
		mu.Unlock()
		notify(TransferReport{Ref: name, Desc: d})
		return nil, nil
	})
	children := images.ChildrenHandler(store)
	if len(opts.Platforms) > 0 {
		children = images.FilterPlatforms(children, platforms.Any(opts.Platforms...))
	}
	h := images.Handlers(counted, remotes.SkipNonDistributableBlobs(children))
	if err := images.Dispatch(ctx, h, semaphore.NewWeighted(transferConcurrency), root); err != nil {
		return fail("fetching", err)
	}
	if err := os.RemoveAll(filepath.Join(dir, "ingest")); err != nil { // the store's scratch space
		return nil, err
	}
	entry := root
	entry.Annotations = map[string]string{imageNameAnnotation: name}
	if spec, err := reference.Parse(name); err == nil {
		if tag, _, _ := strings.Cut(spec.Object, "@"); tag != "" {
			entry.Annotations[ocispec.AnnotationRefName] = tag
		}
	}
	idx := ocispec.Index{Manifests: []ocispec.Descriptor{entry}, MediaType: ocispec.MediaTypeImageIndex}
	idx.SchemaVersion = 2
	if err := (layout{dir}).writeIndex(&idx); err != nil {
		return nil, err
	}
	return rep, nil
}

// Push pushes the image of the OCI layout directory dir (its index.json
// must hold exactly one entry) to ref, a tag, through opts.Resolver. Child
// manifests of an index are pushed by digest and the root under the tag.
// Blobs and manifests the registry has already are not uploaded again;
// non-distributable layers are not pushed.
func Push(ctx context.Context, dir, ref string, opts Options) (*PushReport, error) {
	name, err := destRef(ref)
	if err != nil {
		return nil, err
	}
	if opts.Resolver == nil {
		return nil, fmt.Errorf("%w: %s: no Options.Resolver", ErrPush, name)
	}
	src := layout{dir}
	idx, err := src.readIndex()
	if err != nil {
		return nil, err
	}
	if len(idx.Manifests) != 1 {
		return nil, fmt.Errorf("%w: %s holds %d images, a push takes one", ErrLayout, dir, len(idx.Manifests))
	}
	root := idx.Manifests[0]
	if err := validDescriptor("index entry", root); err != nil {
		return nil, err
	}
	root.Annotations, root.Platform = nil, nil
	ctx = quiet(ctx)
	// tag@digest: the root goes under the tag, other manifests by digest
	pushRef := name + "@" + root.Digest.String()
	rep := &PushReport{Ref: pushRef, Root: root}
	p, err := opts.Resolver.Pusher(ctx, pushRef)
	if err != nil {
		return nil, pushError(name, err)
	}
	cp := &countingPusher{Pusher: p, ref: name, rep: rep, notify: opts.transferReporter()}
	skipForeign := func(h images.Handler) images.Handler {
		return images.HandlerFunc(func(ctx context.Context, d ocispec.Descriptor) ([]ocispec.Descriptor, error) {
			if err := validDescriptor(kind(d.MediaType), d); err != nil {
				return nil, err
			}
			if images.IsNonDistributable(d.MediaType) {
				return nil, images.ErrSkipDesc
			}
			children, err := h.Handle(ctx, d)
			if pd, psize, ok := soci.Packed(d.Annotations); ok && err == nil && d.MediaType == soci.ZtocMediaType {
				// a zTOC's packed copy, which only its annotations name
				children = append(children, ocispec.Descriptor{MediaType: soci.PackedMediaType, Digest: pd, Size: psize})
			}
			return children, err
		})
	}
	if err := remotes.PushContent(ctx, cp, root, layoutProvider{src}, semaphore.NewWeighted(transferConcurrency), nil, skipForeign); err != nil {
		return nil, pushError(name, err)
	}
	return rep, nil
}

// destRef normalises a push destination: it must name a tag, as a
// converted image's digest is not known in advance.
func destRef(ref string) (string, error) {
	name, err := NormalizeRef(ref)
	if err != nil {
		return "", err
	}
	if spec, _ := reference.Parse(name); spec.Digest() != "" {
		return "", fmt.Errorf("%w: %q: a destination takes a tag, not a digest", ErrRef, ref)
	}
	return name, nil
}

// ImageAt converts the image at src into dst, either of which may be a
// registry reference (through opts.Resolver) or an OCI layout (see Image).
// A registry source is pulled into a temporary layout, and a registry
// destination converted into one and pushed from it; they live under
// opts.TempDir (default the system's) and are removed when ImageAt
// returns, whether it succeeded or not.
func ImageAt(ctx context.Context, src, dst Location, opts Options) (*Report, error) {
	var rep *Report
	pull, push, err := throughLayouts(ctx, src, dst, opts, "lazysnap-convert-", false, func(srcPath, dstPath string) (err error) {
		rep, err = Image(ctx, srcPath, dstPath, opts)
		return err
	})
	if err != nil {
		return nil, err
	}
	rep.Pull, rep.Push = pull, push
	return rep, nil
}

// throughLayouts runs work from a source layout to a destination layout,
// either of which may be a registry reference: a registry source is
// pulled into a temporary layout under opts.TempDir (named after prefix),
// and a registry destination is pushed from one, which work writes into
// the pulled source itself when inPlace (it only adds to a layout) and
// into a new one otherwise. The temporary layouts are removed when it
// returns, whether it succeeded or not.
func throughLayouts(ctx context.Context, src, dst Location, opts Options, prefix string, inPlace bool, work func(srcPath, dstPath string) error) (*PullReport, *PushReport, error) {
	if dst.Ref != "" {
		name, err := destRef(dst.Ref)
		if err != nil {
			return nil, nil, err
		}
		dst.Ref = name
	}
	if src.Ref == "" && dst.Ref == "" {
		return nil, nil, work(src.Path, dst.Path)
	}
	tmp, err := os.MkdirTemp(opts.TempDir, prefix)
	if err != nil {
		return nil, nil, err
	}
	defer os.RemoveAll(tmp)
	srcPath, dstPath := src.Path, dst.Path
	var pulled *PullReport
	if src.Ref != "" {
		srcPath = filepath.Join(tmp, "src")
		if pulled, err = Pull(ctx, src.Ref, srcPath, opts); err != nil {
			return nil, nil, err
		}
	}
	if dst.Ref != "" {
		dstPath = filepath.Join(tmp, "dst")
		if inPlace && src.Ref != "" {
			dstPath = srcPath
		}
	}
	if err := work(srcPath, dstPath); err != nil {
		return nil, nil, err
	}
	var pushed *PushReport
	if dst.Ref != "" {
		if pushed, err = Push(ctx, dstPath, dst.Ref, opts); err != nil {
			return nil, nil, err
		}
	}
	return pulled, pushed, nil
}

// pushError wraps a push failure with ErrPush, and ErrPushDenied where
// the hosts configuration or the registry refused it.
func pushError(ref string, err error) error {
	var st remoteerrors.ErrUnexpectedStatus
	switch {
	case errdefs.IsNotFound(err) && strings.Contains(err.Error(), "no push hosts"):
		host, _, _ := strings.Cut(ref, "/")
		return fmt.Errorf("%w: %s: no host of %s has the push capability (add \"push\" to capabilities in its hosts.toml): %w", ErrPushDenied, ref, host, err)
	case errors.As(err, &st) && (st.StatusCode == http.StatusUnauthorized || st.StatusCode == http.StatusForbidden),
		errors.Is(err, docker.ErrInvalidAuthorization):
		return fmt.Errorf("%w: %s: the registry refused the credentials or the push: %w", ErrPushDenied, ref, err)
	}
	return fmt.Errorf("%w: %s: %w", ErrPush, ref, err)
}

// countingPusher counts what is uploaded and what the registry has, and
// names the blob in errors.
type countingPusher struct {
	remotes.Pusher
	ref    string
	notify func(TransferReport)
	mu     sync.Mutex
	rep    *PushReport
}

func (p *countingPusher) Push(ctx context.Context, d ocispec.Descriptor) (content.Writer, error) {
	w, err := p.Pusher.Push(ctx, d)
	if errdefs.IsAlreadyExists(err) {
		p.done(d, true)
		return nil, err
	}
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w", kind(d.MediaType), d.Digest, err)
	}
	return &countingWriter{Writer: w, p: p, desc: d}, nil
}

func (p *countingPusher) done(d ocispec.Descriptor, existing bool) {
	p.mu.Lock()
	if existing {
		p.rep.Existing++
	} else {
		p.rep.Uploaded++
		p.rep.UploadedBytes += d.Size
	}
	p.mu.Unlock()
	p.notify(TransferReport{Ref: p.ref, Desc: d, Push: true, Existing: existing})
}

type countingWriter struct {
	content.Writer
	p    *countingPusher
	desc ocispec.Descriptor
}

func (w *countingWriter) Commit(ctx context.Context, size int64, expected digest.Digest, opts ...content.Opt) error {
	if err := w.Writer.Commit(ctx, size, expected, opts...); err != nil {
		return fmt.Errorf("%s %s: %w", kind(w.desc.MediaType), w.desc.Digest, err)
	}
	w.p.done(w.desc, false)
	return nil
}

// layoutProvider serves an OCI layout's blobs to containerd's push
// handlers.
type layoutProvider struct{ l layout }

func (p layoutProvider) ReaderAt(_ context.Context, d ocispec.Descriptor) (content.ReaderAt, error) {
	f, err := os.Open(p.l.blobPath(d.Digest))
	if errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("%w: blob %s: %w", ErrLayout, d.Digest, errdefs.ErrNotFound)
	}
	if err != nil {
		return nil, err
	}
	return sizedFile{f, d.Size}, nil
}

type sizedFile struct {
	*os.File
	size int64
}

func (f sizedFile) Size() int64 { return f.size }

// kind names what a media type is, for error messages.
func kind(mediaType string) string {
	switch {
	case images.IsManifestType(mediaType):
		return "manifest"
	case images.IsIndexType(mediaType):
		return "index"
	case images.IsConfigType(mediaType):
		return "config"
	case images.IsLayerType(mediaType):
		return "layer"
	}
	return "blob"
}

// quiet makes containerd's code, which logs through the context, silent:
// the library reports through errors and Options callbacks.
func quiet(ctx context.Context) context.Context {
	lg := logrus.New()
	lg.SetOutput(io.Discard)
	lg.SetLevel(logrus.PanicLevel)
	return log.WithLogger(ctx, logrus.NewEntry(lg))
}

// transferReporter returns a serialised opts.Transfer (a no-op if unset).
func (opts Options) transferReporter() func(TransferReport) {
	if opts.Transfer == nil {
		return func(TransferReport) {}
	}
	var mu sync.Mutex
	return func(r TransferReport) {
		mu.Lock()
		defer mu.Unlock()
		opts.Transfer(r)
	}
}
