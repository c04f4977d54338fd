package convert

import (
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/lazysnap/lazysnap/estargz"
	"github.com/lazysnap/lazysnap/layer"
	"github.com/lazysnap/lazysnap/soci"
	"github.com/lazysnap/lazysnap/zstdchunked"
)

// ErrFormat: a layer format convert does not write (Options.Format,
// IndexOptions.Format).
var ErrFormat = errors.New("convert: unknown layer format")

// The layer formats convert writes, by their writers' names.
const (
	FormatEStargz     = "estargz"      // Image's default
	FormatZstdChunked = "zstd:chunked" // Image
	FormatSOCI        = "soci"         // IndexImage's default
)

// writers are the layer formats convert writes (layer.Writer), in one
// list, as remote's formats are those it reads: the only place in
// convert that knows them. Image uses those that read a layer's tar,
// IndexImage those that read its blob.
func writers() []layer.Writer {
	return []layer.Writer{
		estargz.Writer{},
		zstdchunked.Writer{},
		soci.Writer{},
	}
}

// Formats names the formats whose writers read in: layer.InputTar's
// are Options.Format's choices, layer.InputBlob's IndexOptions.Format's.
func Formats(in layer.Input) []string {
	var names []string
	for _, w := range writers() {
		if w.Input() == in {
			names = append(names, w.Name())
		}
	}
	return names
}

// writerNamed returns the writer of the format name that reads in, or
// ErrFormat naming the choices.
func writerNamed(name string, in layer.Input) (layer.Writer, error) {
	for _, w := range writers() {
		if w.Name() == name && w.Input() == in {
			return w, nil
		}
	}
	return nil, fmt.Errorf("%w %q (want %s)", ErrFormat, name, strings.Join(Formats(in), " or "))
}

// stale: an annotation that a layer format writes, which does not
// describe a layer converted (to any format).
func stale(k string) bool {
	return slices.ContainsFunc(writers(), func(w layer.Writer) bool { return slices.Contains(w.Annotations(), k) })
}
