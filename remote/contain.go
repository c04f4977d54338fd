package remote

import (
	"fmt"

	"github.com/lazysnap/lazysnap/fs/fetch"
)

// contain is deferred where remote runs a format's code over a layer's
// registry bytes outside fs (which contains its own goroutines and FUSE
// requests): a Mount (the index's Open), the warmer's read of a tail, the
// check of a complete layer (BlobChecker), and the lookup of an image's
// prefetch profile in the registry. name is the layer's digest (the
// image's profile key for a profile). A panic there is recovered and
// becomes *err, an fetch.PanicError (wrapping fetch.ErrPanic), wrapped in
// reason when it is set (a Mount's: snapshotter.ReasonNotLazy, so that
// the layer is pulled the ordinary way). The one place remote recovers.
func contain(name string, reason error, err *error) {
	r := recover()
	if r == nil {
		return
	}
	var e error = fetch.Recovered(name, r)
	if reason != nil {
		e = fmt.Errorf("%w: layer %s: %w", reason, name, e)
	}
	*err = e
}
