package layer

import "errors"

// The kinds of a format's errors that decide how a layer that cannot be
// mounted lazily falls back: a format's sentinels are Sentinels of one of
// them, so that the mount maps every format's errors in one place
// without knowing the format.
var (
	// ErrNotLazy: the layer cannot be read lazily: its blob or index is
	// not a valid layer of its format, or is past a cap.
	ErrNotLazy = errors.New("layer: not lazily loadable")
	// ErrVerify: bytes do not match the digest that vouches for them.
	ErrVerify = errors.New("layer: verification failed")
)

var (
	// ErrInvalid means a list of entries cannot be presented as a
	// filesystem (a kind of ErrNotLazy).
	ErrInvalid = Sentinel("layer: invalid layer", ErrNotLazy)
	// ErrOtherFormat means a blob whose descriptor claims a format is in
	// another: the next format that claims it is tried.
	ErrOtherFormat = errors.New("layer: the blob is in another format")
	// ErrMismatch is an index that the layer's own verified bytes
	// contradict (a SOCI zTOC entry its tar header does not match, or a
	// span that does not inflate from its checkpoint): the index is
	// forged or broken, and the mount marks it bad (a kind of ErrVerify).
	ErrMismatch = Sentinel("layer: the index contradicts the layer", ErrVerify)
)

// Sentinel returns a sentinel error whose text is msg and which is also
// kind (errors.Is), one of the kinds above.
func Sentinel(msg string, kind error) error { return &sentinel{msg: msg, kind: kind} }

type sentinel struct {
	msg  string
	kind error
}

func (s *sentinel) Error() string { return s.msg }
func (s *sentinel) Unwrap() error { return s.kind }
