package cri

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/lazysnap/lazysnap/fetcher"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// MaxMsgSize is the gRPC message size limit on both sides, kubelet's.
const MaxMsgSize = 16 << 20

// AuthStore keeps pull auths where the layers are fetched.
type AuthStore interface {
	// SetPullAuth makes auth the auth of image's repository and returns
	// the replacement's generation.
	SetPullAuth(ctx context.Context, image string, auth fetcher.PullAuth) (uint64, error)
	// RevertPullAuth undoes generation gen, unless replaced since.
	RevertPullAuth(ctx context.Context, image string, gen uint64) error
}

// LocalAuths is the AuthStore of a process that fetches the layers
// itself: pa, which its fetcher asks.
func LocalAuths(pa *fetcher.PullAuths) AuthStore { return localAuths{pa} }

type localAuths struct{ pa *fetcher.PullAuths }

func (a localAuths) SetPullAuth(_ context.Context, image string, auth fetcher.PullAuth) (uint64, error) {
	return a.pa.Set(image, auth)
}

func (a localAuths) RevertPullAuth(_ context.Context, image string, gen uint64) error {
	return a.pa.Revert(image, gen)
}

// Options are a Proxy's hooks.
type Options struct {
	// OnAuthError is told when the auth of a pull could not be kept or
	// reverted (the error names the image, never the auth).
	OnAuthError func(image string, err error)
	// OnPull is told of every forwarded pull and its result.
	OnPull func(image string, withAuth bool, err error)
}

// Proxy is the image service. Register it on a gRPC server.
type Proxy struct {
	runtimeapi.UnimplementedImageServiceServer
	backend runtimeapi.ImageServiceClient
	auths   AuthStore
	opts    Options
}

var _ runtimeapi.ImageServiceServer = (*Proxy)(nil)

// NewProxy forwards to the image service of conn (containerd's CRI
// socket, see Dial) and keeps pull auths in auths.
func NewProxy(conn grpc.ClientConnInterface, auths AuthStore, opts Options) *Proxy {
	return &Proxy{backend: runtimeapi.NewImageServiceClient(conn), auths: auths, opts: opts}
}

// Dial connects to the CRI socket at address (a path, or unix://path).
// The connection is made lazily, on the first call.
func Dial(address string) (*grpc.ClientConn, error) {
	target := address
	if len(target) > 0 && target[0] == '/' {
		target = "unix://" + target
	}
	conn, err := grpc.NewClient(target,
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(MaxMsgSize), grpc.MaxCallSendMsgSize(MaxMsgSize)))
	if err != nil {
		return nil, fmt.Errorf("cri: containerd CRI address %q: %w", address, err)
	}
	return conn, nil
}

// NewServer is a gRPC server serving p with kubelet's message limits.
func NewServer(p *Proxy) *grpc.Server {
	srv := grpc.NewServer(grpc.MaxRecvMsgSize(MaxMsgSize), grpc.MaxSendMsgSize(MaxMsgSize))
	runtimeapi.RegisterImageServiceServer(srv, p)
	return srv
}

// revertTimeout bounds reverting a failed pull's auth.
const revertTimeout = 10 * time.Second

// PullImage keeps the call's auth for the image's layers, then forwards
// the call; a failed pull's auth is reverted.
func (p *Proxy) PullImage(ctx context.Context, req *runtimeapi.PullImageRequest) (*runtimeapi.PullImageResponse, error) {
	image := req.GetImage().GetImage()
	auth := pullAuth(req.GetAuth())
	gen, serr := p.auths.SetPullAuth(ctx, image, auth)
	if serr != nil {
		p.authError(image, fmt.Errorf("keeping the pull's auth: %w", serr))
	}
	resp, err := p.backend.PullImage(ctx, req)
	if err != nil && serr == nil {
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), revertTimeout)
		if rerr := p.auths.RevertPullAuth(rctx, image, gen); rerr != nil {
			p.authError(image, fmt.Errorf("reverting the failed pull's auth: %w", rerr))
		}
		cancel()
	}
	if p.opts.OnPull != nil {
		p.opts.OnPull(image, auth != (fetcher.PullAuth{}), err)
	}
	return resp, err
}

func (p *Proxy) authError(image string, err error) {
	if p.opts.OnAuthError != nil {
		p.opts.OnAuthError(image, err)
	}
}

// pullAuth is what lazysnap keeps of a CRI AuthConfig: what containerd
// uses (it ignores registry_token too).
func pullAuth(a *runtimeapi.AuthConfig) fetcher.PullAuth {
	if a == nil {
		return fetcher.PullAuth{}
	}
	return fetcher.PullAuth{
		Username: a.GetUsername(), Password: a.GetPassword(), Auth: a.GetAuth(),
		ServerAddress: a.GetServerAddress(), IdentityToken: a.GetIdentityToken(),
	}
}

func (p *Proxy) ListImages(ctx context.Context, req *runtimeapi.ListImagesRequest) (*runtimeapi.ListImagesResponse, error) {
	return p.backend.ListImages(ctx, req)
}

func (p *Proxy) ImageStatus(ctx context.Context, req *runtimeapi.ImageStatusRequest) (*runtimeapi.ImageStatusResponse, error) {
	return p.backend.ImageStatus(ctx, req)
}

func (p *Proxy) RemoveImage(ctx context.Context, req *runtimeapi.RemoveImageRequest) (*runtimeapi.RemoveImageResponse, error) {
	return p.backend.RemoveImage(ctx, req)
}

func (p *Proxy) ImageFsInfo(ctx context.Context, req *runtimeapi.ImageFsInfoRequest) (*runtimeapi.ImageFsInfoResponse, error) {
	return p.backend.ImageFsInfo(ctx, req)
}

// StreamImages relays containerd's stream.
func (p *Proxy) StreamImages(req *runtimeapi.StreamImagesRequest, out grpc.ServerStreamingServer[runtimeapi.StreamImagesResponse]) error {
	in, err := p.backend.StreamImages(out.Context(), req)
	if err != nil {
		return err
	}
	for {
		m, err := in.Recv()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		if err := out.Send(m); err != nil {
			return err
		}
	}
}
