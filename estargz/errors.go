package estargz

import (
	"errors"

	"github.com/lazysnap/lazysnap/layer"
)

// Errors of the package. ErrFormat, ErrTooLarge and ErrTooManyEntries are
// layer.ErrNotLazy, ErrVerify is layer.ErrVerify: how a layer that
// fails with them falls back.
var (
	// ErrFormat means the blob is not well-formed eStargz: a bad footer, a
	// TOC that does not parse, or entries that break the format's rules.
	ErrFormat = layer.Sentinel("estargz: invalid format", layer.ErrNotLazy)
	// ErrVerify means content did not match the digest that vouches for it.
	ErrVerify = layer.Sentinel("estargz: verification failed", layer.ErrVerify)
	// ErrTooLarge means a size cap (TOC size, decompressed size) was exceeded.
	ErrTooLarge = layer.Sentinel("estargz: too large", layer.ErrNotLazy)
	// ErrTooManyEntries means a TOC has more entries than the cap
	// (WithMaxEntries).
	ErrTooManyEntries = layer.Sentinel("estargz: too many TOC entries", layer.ErrNotLazy)
	// ErrNotFound means the named entry is not in the TOC.
	ErrNotFound = errors.New("estargz: not found")
	// ErrNoTOCDigest means Open was called without saying how the TOC is to
	// be verified.
	ErrNoTOCDigest = errors.New("estargz: no TOC digest given")
)
