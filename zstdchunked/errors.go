package zstdchunked

import (
	"errors"
	"fmt"
	"github.com/lazysnap/lazysnap/layer"

	"github.com/lazysnap/lazysnap/estargz"
)

var (
	// ErrFormat means the blob is not well-formed zstd:chunked: a bad
	// footer or annotation, a TOC that does not decode, or entries that
	// break the format's rules.
	ErrFormat = layer.Sentinel("zstdchunked: invalid format", layer.ErrNotLazy)
	// ErrVerify means content did not match the digest that vouches for it.
	ErrVerify = layer.Sentinel("zstdchunked: verification failed", layer.ErrVerify)
	// ErrTooLarge means a size cap was exceeded.
	ErrTooLarge = layer.Sentinel("zstdchunked: too large", layer.ErrNotLazy)
)

// wrapEstargz gives an error of the estargz package (its TOC decoder, a
// chunk's verification) this package's sentinel, keeping estargz's too.
func wrapEstargz(err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, estargz.ErrVerify):
		return fmt.Errorf("%w: %w", ErrVerify, err)
	case errors.Is(err, estargz.ErrTooLarge) || errors.Is(err, estargz.ErrTooManyEntries):
		return fmt.Errorf("%w: %w", ErrTooLarge, err)
	case errors.Is(err, estargz.ErrFormat):
		return fmt.Errorf("%w: %w", ErrFormat, err)
	}
	return err
}
