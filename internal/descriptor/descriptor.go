// Package descriptor checks OCI content descriptors where they enter
// lazysnap (from a layout, an archive, a registry or snapshot labels),
// before anything uses their digest as a path or a hash, their size as a
// length, or their media type to decide what they are.
package descriptor

import (
	_ "crypto/sha256" // the algorithms go-digest registers, linked in so
	_ "crypto/sha512" // that Digest accepts (and hashing works for) all three
	"errors"
	"fmt"
	"regexp"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// ErrInvalid means a descriptor (or one of its fields) is malformed.
var ErrInvalid = errors.New("descriptor: invalid")

// mediaTypeRE is RFC 6838's type "/" subtype (restricted-name: a letter
// or digit, then up to 126 of letters, digits and !#$&-^_.+, the "+" of
// a structured-syntax suffix among them), without parameters, as the OCI
// image specification's schema has it.
var mediaTypeRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}/[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}$`)

// Digest checks that d is well-formed and of an algorithm go-digest
// registers (sha256, sha384, sha512), with an encoded part of the
// algorithm's length in lower-case hex.
func Digest(d digest.Digest) error {
	if d == "" {
		return fmt.Errorf("%w: no digest", ErrInvalid)
	}
	if err := d.Validate(); err != nil {
		return fmt.Errorf("%w: digest %q: %w", ErrInvalid, d, err)
	}
	return nil
}

// MediaType checks that mt is non-empty and of the form type/subtype
// (with an optional +suffix).
func MediaType(mt string) error {
	if mt == "" {
		return fmt.Errorf("%w: no media type", ErrInvalid)
	}
	if !mediaTypeRE.MatchString(mt) {
		return fmt.Errorf("%w: media type %q is not type/subtype", ErrInvalid, mt)
	}
	return nil
}

// Validate checks d's digest, size (not negative) and media type.
// Annotations and URLs are not checked: their meaning is the reader's.
func Validate(d ocispec.Descriptor) error {
	if err := MediaType(d.MediaType); err != nil {
		return err
	}
	if err := Digest(d.Digest); err != nil {
		return err
	}
	if d.Size < 0 {
		return fmt.Errorf("%w: %s: negative size %d", ErrInvalid, d.Digest, d.Size)
	}
	return nil
}
