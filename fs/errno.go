package fs

import (
	"context"
	"errors"
	"syscall"
)

// fetchError is a failure of the BlobReader. Whatever errno it carries (a
// socket's ECONNRESET or ECONNREFUSED, say) is the network's, not the
// file's: the reader gets EIO.
type fetchError struct{ err error }

func (e *fetchError) Error() string { return e.err.Error() }
func (e *fetchError) Unwrap() error { return e.err }

// Errno maps an error to the errno the kernel gets. It is the package's one
// mapper: every FUSE method returns through it.
func Errno(err error) syscall.Errno {
	var (
		errno syscall.Errno
		fetch *fetchError
	)
	switch {
	case err == nil:
		return 0
	case errors.Is(err, context.Canceled):
		return syscall.EINTR
	case errors.As(err, &fetch):
		return syscall.EIO
	case errors.As(err, &errno):
		return errno
	default: // timeouts, registry failures, verification failures
		return syscall.EIO
	}
}
