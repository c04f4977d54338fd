package fs

import (
	"errors"
	"syscall"

	"github.com/lazysnap/lazysnap/fs/fetch"
)

// fileErrno reports whether errno is one fs gives for the file itself
// (what a lookup, readlink, xattr or open of a read-only tree answers).
// Any other errno in an error (ECONNRESET, EPIPE, ETIMEDOUT, ENOSPC of the
// cache disk...) came from below the filesystem and is EIO to the reader.
func fileErrno(errno syscall.Errno) bool {
	switch errno {
	case syscall.ENOENT, syscall.ENOTDIR, syscall.EISDIR, syscall.EINVAL,
		syscall.ENODATA, syscall.ERANGE, syscall.EROFS, syscall.ENAMETOOLONG:
		return true
	}
	return false
}

// Errno maps an error to the errno the kernel gets. It is the package's one
// mapper: every FUSE method returns through it. It is EIO unless the error
// is the reader's interruption (EINTR) or carries one of the errnos fs
// gives for a file (ENOENT, EINVAL, ENODATA...) and is not a fetch failure,
// so that no network errno reaches a reader, whichever call site forgot to
// mark its error.
func Errno(err error) syscall.Errno {
	var (
		errno syscall.Errno
		blob  *fetch.BlobError
		intr  *fetch.Interrupted
	)
	switch {
	case err == nil:
		return 0
	case errors.As(err, &intr):
		return syscall.EINTR
	case errors.As(err, &blob):
		return syscall.EIO
	case errors.As(err, &errno) && fileErrno(errno):
		return errno
	default: // timeouts, registry failures, verification failures, network errnos
		return syscall.EIO
	}
}
