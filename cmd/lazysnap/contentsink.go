package main

import (
	"context"
	"fmt"
	"strings"

	contentapi "github.com/containerd/containerd/api/services/content/v1"
	"github.com/containerd/containerd/v2/core/content"
	"github.com/containerd/containerd/v2/core/content/proxy"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	"github.com/containerd/containerd/v2/pkg/reference"
	"github.com/containerd/errdefs"
	"github.com/lazysnap/lazysnap/cri"
	"github.com/lazysnap/lazysnap/remote"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// contentSink is [pull] content_store: each blob lazysnap pulls at line
// rate is also written into containerd's content store (at address), in
// the namespace containerd named in the Prepare (containerd 1.7 and later
// tell proxy snapshotters; 1.6 does not, and such blobs are not stored).
// close closes the connection.
func contentSink(address string) (sink func(ctx context.Context, ref string, desc ocispec.Descriptor) (remote.BlobSink, error), close func() error, err error) {
	conn, err := cri.Dial(address)
	if err != nil {
		return nil, nil, err
	}
	cs := proxy.NewContentStore(contentapi.NewContentClient(conn))
	return func(ctx context.Context, ref string, desc ocispec.Descriptor) (remote.BlobSink, error) {
		ns, err := namespaces.NamespaceRequired(ctx)
		if err != nil {
			return nil, fmt.Errorf("containerd did not name the pull's namespace (containerd 1.6 does not tell proxy snapshotters): %w", err)
		}
		ctx = namespaces.WithNamespace(context.WithoutCancel(ctx), ns)
		ingest := "lazysnap-line-rate-" + desc.Digest.String()
		w, err := content.OpenWriter(ctx, cs, content.WithRef(ingest), content.WithDescriptor(desc))
		if errdefs.IsAlreadyExists(err) {
			return discardSink{}, nil
		}
		if err != nil {
			return nil, fmt.Errorf("containerd content store: %w", err)
		}
		var opts []content.Opt
		if spec, err := reference.Parse(ref); err == nil {
			// as containerd labels the blobs it fetches: where it came from
			host := spec.Hostname()
			opts = append(opts, content.WithLabels(map[string]string{
				"containerd.io/distribution.source." + host: strings.TrimPrefix(spec.Locator, host+"/")}))
		}
		return &storeSink{ctx: ctx, cs: cs, ingest: ingest, w: w, desc: desc, opts: opts}, nil
	}, conn.Close, nil
}

// storeSink writes one blob into containerd's content store.
type storeSink struct {
	ctx    context.Context // with the namespace
	cs     content.Store
	ingest string
	w      content.Writer
	desc   ocispec.Descriptor
	opts   []content.Opt
}

func (s *storeSink) Write(p []byte) (int, error) { return s.w.Write(p) }

func (s *storeSink) Commit(ctx context.Context) error {
	err := s.w.Commit(s.ctx, s.desc.Size, s.desc.Digest, s.opts...)
	if errdefs.IsAlreadyExists(err) {
		return nil
	}
	return err
}

func (s *storeSink) Abort() {
	s.w.Close()
	_ = s.cs.Abort(s.ctx, s.ingest)
}

// discardSink is the sink of a blob the content store has already.
type discardSink struct{}

func (discardSink) Write(p []byte) (int, error)  { return len(p), nil }
func (discardSink) Commit(context.Context) error { return nil }
func (discardSink) Abort()                       {}
