package index_test

import (
	"errors"
	"sync"
	"testing"

	"github.com/lazysnap/lazysnap/index"
)

func TestBudget(t *testing.T) {
	for _, tc := range []struct {
		name    string
		max     int64
		reserve []int64
		wantErr []bool
	}{
		{"no cap", 0, []int64{1 << 40, 1 << 40}, []bool{false, false}},
		{"fits", 100, []int64{60, 40}, []bool{false, false}},
		{"over", 100, []int64{60, 41, 40}, []bool{false, true, false}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := index.NewBudget(tc.max)
			for i, n := range tc.reserve {
				err := b.Reserve(n)
				if (err != nil) != tc.wantErr[i] || (err != nil && !errors.Is(err, index.ErrBudget)) {
					t.Fatalf("Reserve(%d) #%d: %v", n, i, err)
				}
			}
		})
	}
}

func TestBudgetConcurrent(t *testing.T) {
	b := index.NewBudget(1000)
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 1000 {
				if b.Reserve(10) == nil {
					b.Release(10)
				}
			}
		}()
	}
	wg.Wait()
	if u := b.Used(); u != 0 {
		t.Fatalf("used %d after every release", u)
	}
	var nilB *index.Budget
	if err := nilB.Reserve(1); err != nil {
		t.Fatal(err)
	}
}
