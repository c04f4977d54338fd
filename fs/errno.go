package fs

import (
	"context"
	"errors"
	"syscall"
)

// Errno maps an error to the errno the kernel gets. It is the package's one
// mapper: every FUSE method returns through it.
func Errno(err error) syscall.Errno {
	var errno syscall.Errno
	switch {
	case err == nil:
		return 0
	case errors.As(err, &errno):
		return errno
	case errors.Is(err, context.Canceled):
		return syscall.EINTR
	default: // timeouts, registry failures, verification failures
		return syscall.EIO
	}
}
