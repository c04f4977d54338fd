package snapshotter

import (
	"slices"
	"sync"
	"time"
)

// Fallback is one layer that a Prepare did not mount remotely, whatever
// step refused it (the labels, Mount, the commit), as Fallbacks lists it.
type Fallback struct {
	// Ref and Digest are the image reference and layer digest labels as
	// given, even when they did not parse (either may be empty).
	Ref, Digest string
	// Target is the snapshot the client asked for (its chain ID).
	Target string
	Reason Reason
	Err    string
	Time   time.Time
}

// maxFallbacks bounds the fallbacks remembered: the most recent, one per
// image reference and layer digest.
const maxFallbacks = 256

// fallbackLog remembers the latest fallback of each layer, by reference
// and digest, until that layer mounts remotely.
type fallbackLog struct {
	mu sync.Mutex
	m  map[[2]string]Fallback
}

func (l *fallbackLog) add(f Fallback) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.m == nil {
		l.m = map[[2]string]Fallback{}
	}
	l.m[[2]string{f.Ref, f.Digest}] = f
	if len(l.m) > maxFallbacks {
		var oldest [2]string
		first := true
		for k, v := range l.m {
			if first || v.Time.Before(l.m[oldest].Time) {
				oldest, first = k, false
			}
		}
		delete(l.m, oldest)
	}
}

// mounted forgets the fallback of a layer that has now mounted remotely.
func (l *fallbackLog) mounted(ref, digest string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	delete(l.m, [2]string{ref, digest})
}

// list returns the fallbacks, oldest first.
func (l *fallbackLog) list() []Fallback {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := make([]Fallback, 0, len(l.m))
	for _, f := range l.m {
		out = append(out, f)
	}
	slices.SortFunc(out, func(a, b Fallback) int { return a.Time.Compare(b.Time) })
	return out
}
