package soci

import (
	"errors"
	"fmt"

	"github.com/lazysnap/lazysnap/layer"
)

// Errors of the package; every error it returns wraps one of them.
var (
	// ErrFormat: the bytes are not a zTOC, checkpoint blob or SOCI index
	// manifest.
	ErrFormat = layer.Sentinel("soci: malformed", layer.ErrNotLazy)
	// ErrAliased: a zTOC record (an entry's table, a string, an xattr) is
	// referred to twice, or overlaps another; it wraps ErrFormat. SOCI's
	// writer gives every entry records of its own, and sharing them is how
	// a small zTOC would decode into gigabytes.
	ErrAliased = fmt.Errorf("%w: aliased record", ErrFormat)
	// ErrInvalid: well-formed, but a value is out of range, out of order
	// or inconsistent.
	ErrInvalid = layer.Sentinel("soci: invalid", layer.ErrNotLazy)
	// ErrTooLarge: past a size or count limit.
	ErrTooLarge = layer.Sentinel("soci: too large", layer.ErrNotLazy)
	// ErrUnsupported: a version or algorithm lazysnap does not read.
	ErrUnsupported = layer.Sentinel("soci: unsupported", layer.ErrNotLazy)
	// ErrVerify: bytes do not match the digest that names them.
	ErrVerify = layer.Sentinel("soci: verification failed", layer.ErrVerify)
	// ErrNotFound: the index has no zTOC for the layer.
	ErrNotFound = errors.New("soci: not found")
)
