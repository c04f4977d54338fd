package layer_test

import (
	"errors"
	"fmt"
	"testing"

	"github.com/lazysnap/lazysnap/layer"
)

// TestSentinel: a sentinel is its kind (and only its kind), keeps its
// text, and an error wrapping it is both.
func TestSentinel(t *testing.T) {
	verify := layer.Sentinel("fmt: verification failed", layer.ErrVerify)
	for _, tc := range []struct {
		name     string
		err      error
		verify   bool
		notLazy  bool
		sentinel bool
	}{
		{"the sentinel", verify, true, false, true},
		{"wrapped", fmt.Errorf("chunk at 4: %w", verify), true, false, true},
		{"another kind", layer.ErrInvalid, false, true, false},
		{"the kind alone", layer.ErrVerify, true, false, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := errors.Is(tc.err, layer.ErrVerify); got != tc.verify {
				t.Errorf("Is ErrVerify: %v, want %v", got, tc.verify)
			}
			if got := errors.Is(tc.err, layer.ErrNotLazy); got != tc.notLazy {
				t.Errorf("Is ErrNotLazy: %v, want %v", got, tc.notLazy)
			}
			if got := errors.Is(tc.err, verify); got != tc.sentinel {
				t.Errorf("Is the sentinel: %v, want %v", got, tc.sentinel)
			}
		})
	}
	if verify.Error() != "fmt: verification failed" {
		t.Errorf("text %q", verify.Error())
	}
}

// sink records what Feed gives it.
type sink struct{ got []string }

func (s *sink) Entry(id, parent, link int, base string, e *layer.Entry) error {
	s.got = append(s.got, fmt.Sprintf("%d %d %d %s", id, parent, link, base))
	return nil
}

func (s *sink) ChunkEnd(int, int64) {}

// TestFeed: a complete list is given in order with each entry's parent
// and hardlink target; a list the index could not lay out is refused.
func TestFeed(t *testing.T) {
	root := layer.Entry{Name: "", Type: layer.TypeDir}
	dir := layer.Entry{Name: "etc", Type: layer.TypeDir}
	file := layer.Entry{Name: "etc/passwd", Type: layer.TypeReg}
	link := layer.Entry{Name: "etc/link", Type: layer.TypeHardlink, LinkName: "etc/passwd"}
	for _, tc := range []struct {
		name string
		ents []layer.Entry
		want []string // nil: refused
	}{
		{"tree", []layer.Entry{root, dir, file, link}, []string{"0 -1 -1 ", "1 0 -1 etc", "2 1 -1 passwd", "3 1 2 link"}},
		{"empty", nil, nil},
		{"no root first", []layer.Entry{dir, root}, nil},
		{"no parent", []layer.Entry{root, file}, nil},
		{"hardlink before its target", []layer.Entry{root, dir, link, file}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var s sink
			err := layer.Feed(&s, tc.ents)
			if tc.want == nil {
				if !errors.Is(err, layer.ErrInvalid) {
					t.Fatalf("Feed: %v, want ErrInvalid", err)
				}
				return
			}
			if err != nil || fmt.Sprint(s.got) != fmt.Sprint(tc.want) {
				t.Fatalf("Feed: %v, %q; want %q", err, s.got, tc.want)
			}
		})
	}
}
