package fetch

import (
	"sync"
	"sync/atomic"
)

// Link is what the layers of a process share of the network they fetch
// over: whether a reader of any of them waits for a fetch, and when the
// last wait ended. Every layer's background fetch yields to every reader
// (BackgroundQuiet counts from the last wait of any layer), and a reader
// preempts the background spans of every layer (Options.NoPreempt): a
// reader of an image's top layer is not slowed by the background fetch of
// the layer below it, which shares its link to the registry. A Layer
// without Options.Link has a Link of its own.
type Link struct {
	waiting atomic.Int32 // readers (and entry checks) waiting, of every layer
	last    atomic.Int64 // Clock nanoseconds when the last wait ended

	mu     sync.Mutex
	sig    chan struct{} // closed and replaced when a wait ends or background bytes arrive
	layers map[*Layer]struct{}
}

// NewLink returns a Link for layers to share.
func NewLink() *Link {
	return &Link{sig: make(chan struct{}), layers: map[*Layer]struct{}{}}
}

// signal returns the channel the next wake closes.
func (k *Link) signal() <-chan struct{} {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.sig
}

// wake wakes every layer's background waiting for its turn.
func (k *Link) wake() {
	k.mu.Lock()
	close(k.sig)
	k.sig = make(chan struct{})
	k.mu.Unlock()
}

func (k *Link) add(l *Layer) {
	k.mu.Lock()
	k.layers[l] = struct{}{}
	k.mu.Unlock()
}

func (k *Link) remove(l *Layer) {
	k.mu.Lock()
	delete(k.layers, l)
	k.mu.Unlock()
}

// others returns the layers on the link but l.
func (k *Link) others(l *Layer) []*Layer {
	k.mu.Lock()
	defer k.mu.Unlock()
	out := make([]*Layer, 0, len(k.layers))
	for o := range k.layers {
		if o != l {
			out = append(out, o)
		}
	}
	return out
}

// waiting counts a reader (or an entry check a request waits for) as
// waiting for the link, which holds the background fetch of every layer on
// it back until it has waited (and BackgroundQuiet after).
func (l *Layer) waiting() {
	l.onDemand.Add(1)
	l.link.waiting.Add(1)
}

// waited ends waiting.
func (l *Layer) waited() {
	now := l.opts.Clock.Now().UnixNano()
	l.lastOnDemand.Store(now)
	l.link.last.Store(now)
	l.onDemand.Add(-1)
	l.link.waiting.Add(-1)
	l.wake()
}
