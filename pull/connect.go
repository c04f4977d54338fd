package pull

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"syscall"
	"time"

	containerd "github.com/containerd/containerd/v2/client"
)

// ErrNoContainerd is Connect's error when nothing listens on containerd's
// socket.
var ErrNoContainerd = errors.New("pull: no containerd")

// Connect connects to containerd's socket at address, with namespace as
// the client's default. It fails at once, saying why, when nothing listens
// there (containerd's client would retry until its 10 s timeout and then
// say only "timeout"), and asks containerd's version, since containerd 2's
// client connects at its first call, not when made.
func Connect(ctx context.Context, address, namespace string) (*containerd.Client, error) {
	c, err := net.DialTimeout("unix", address, 5*time.Second)
	switch {
	case err == nil:
		c.Close()
	case errors.Is(err, os.ErrNotExist):
		return nil, fmt.Errorf("%w: containerd socket %s does not exist: is containerd running? (--address names its socket)", ErrNoContainerd, address)
	case errors.Is(err, syscall.ECONNREFUSED):
		return nil, fmt.Errorf("%w: nothing listens on containerd socket %s: is containerd running? (--address names its socket)", ErrNoContainerd, address)
	default:
		return nil, fmt.Errorf("connecting to containerd at %s: %w", address, err)
	}
	client, err := containerd.New(address, containerd.WithDefaultNamespace(namespace))
	if err != nil {
		return nil, fmt.Errorf("connecting to containerd at %s: %w", address, err)
	}
	if _, err := client.Version(ctx); err != nil {
		client.Close()
		return nil, fmt.Errorf("connecting to containerd at %s: %w", address, err)
	}
	return client, nil
}
