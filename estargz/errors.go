package estargz

import "errors"

var (
	// ErrFormat means the blob is not well-formed eStargz: a bad footer, a
	// TOC that does not parse, or entries that break the format's rules.
	ErrFormat = errors.New("estargz: invalid format")
	// ErrVerify means content did not match the digest that vouches for it.
	ErrVerify = errors.New("estargz: verification failed")
	// ErrTooLarge means a size cap (TOC size, decompressed size) was exceeded.
	ErrTooLarge = errors.New("estargz: too large")
	// ErrTooManyEntries means a TOC has more entries than the cap
	// (WithMaxEntries).
	ErrTooManyEntries = errors.New("estargz: too many TOC entries")
	// ErrNotFound means the named entry is not in the TOC.
	ErrNotFound = errors.New("estargz: not found")
	// ErrNoTOCDigest means Open was called without saying how the TOC is to
	// be verified.
	ErrNoTOCDigest = errors.New("estargz: no TOC digest given")
)
