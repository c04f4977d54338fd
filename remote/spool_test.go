package remote

import (
	"context"
	"io"
	"slices"
	"sync"
	"testing"
	"testing/synctest"

	"github.com/opencontainers/go-digest"
)

// TestSpoolsDownloadInOrder: the spools of the layers above a Pull's
// download one after another, each once the download below it has ended,
// so that the layer containerd waits for has the whole link (the walk
// image's first layer took 8.0 s beside its neighbour's spool against
// 5.3 s of link time alone).
func TestSpoolsDownloadInOrder(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s := newSpooler(t.TempDir())
		defer s.close()
		var (
			mu      sync.Mutex
			started []string
		)
		blob := func(name string) func(context.Context, io.Writer) error {
			return func(ctx context.Context, w io.Writer) error {
				mu.Lock()
				started = append(started, name)
				mu.Unlock()
				_, err := io.WriteString(w, name)
				return err
			}
		}
		below := make(chan struct{}) // the Pull's own download
		one := s.start(digest.FromString("one"), 3, blob("one"), func() {}, below)
		if one == nil {
			t.Fatal("spool one not started")
		}
		if two := s.start(digest.FromString("two"), 3, blob("two"), func() {}, one.ended); two == nil {
			t.Fatal("spool two not started")
		}
		synctest.Wait()
		mu.Lock()
		if len(started) != 0 {
			t.Fatalf("downloads %v started while the one below them runs", started)
		}
		mu.Unlock()
		close(below)
		synctest.Wait()
		mu.Lock()
		defer mu.Unlock()
		if !slices.Equal(started, []string{"one", "two"}) {
			t.Fatalf("downloads %v, want one then two", started)
		}
	})
}
