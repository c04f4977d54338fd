package index

import (
	"fmt"
	"sync"

	"github.com/lazysnap/lazysnap/layer"
)

// ErrBudget means a reservation would take the indexes' memory past the
// Budget's cap.
var ErrBudget = layer.Sentinel("index: memory budget exceeded", layer.ErrNotLazy)

// Budget caps the memory of the indexes of the layers mounted at once
// (MemoryBytes of each). It is safe for concurrent use. A nil *Budget, or
// one of cap 0, has no cap.
type Budget struct {
	mu   sync.Mutex
	max  int64
	used int64
}

// NewBudget returns a budget of max bytes (0: no cap).
func NewBudget(max int64) *Budget { return &Budget{max: max} }

// Reserve takes n bytes of the budget, or fails with ErrBudget and takes
// nothing.
func (b *Budget) Reserve(n int64) error {
	if b == nil {
		return nil
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.max > 0 && b.used+n > b.max {
		return fmt.Errorf("%w: %d bytes wanted, %d of %d in use", ErrBudget, n, b.used, b.max)
	}
	b.used += n
	return nil
}

// Release gives back n bytes that Reserve took.
func (b *Budget) Release(n int64) {
	if b == nil {
		return
	}
	b.mu.Lock()
	b.used -= n
	b.mu.Unlock()
}

// Used is how many bytes are reserved.
func (b *Budget) Used() int64 {
	if b == nil {
		return 0
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.used
}
