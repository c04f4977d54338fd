package record

import (
	"context"
	"fmt"
	"os"
)

// Layout unpacks the image of the OCI layout directory layout into a
// scratch directory, runs argv in it (Trace) and returns the files it
// opened, in first-access order, after the ones containerd reads to
// create a container (WithRuntimeFiles). The scratch directory is removed
// before it returns.
func Layout(ctx context.Context, layout string, argv []string, opts Options) ([]string, error) {
	if fi, err := os.Stat(layout); err != nil || !fi.IsDir() {
		return nil, fmt.Errorf("-record needs SRC to be an OCI layout directory: %s", layout)
	}
	scratch, err := os.MkdirTemp("", "lazysnap-record-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(scratch)
	if err := Unpack(layout, scratch); err != nil {
		return nil, err
	}
	files, err := Trace(ctx, scratch, argv, opts)
	if err != nil {
		return nil, err
	}
	return WithRuntimeFiles(scratch, files), nil
}
