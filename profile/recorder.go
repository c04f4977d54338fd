package profile

import (
	"sync"
	"time"

	"github.com/opencontainers/go-digest"
)

// Limits bound a recording. Zero values mean the defaults.
type Limits struct {
	// Quiet ends the recording once no new chunk has been read for this
	// long (2s).
	Quiet time.Duration
	// Total ends it this long after the first chunk was read (60s).
	Total time.Duration
	// MaxChunks ends it at this many chunks, over all layers (MaxChunks).
	MaxChunks int
}

func (l Limits) withDefaults() Limits {
	if l.Quiet <= 0 {
		l.Quiet = 2 * time.Second
	}
	if l.Total <= 0 {
		l.Total = 60 * time.Second
	}
	if l.MaxChunks <= 0 || l.MaxChunks > MaxChunks {
		l.MaxChunks = MaxChunks
	}
	return l
}

// Namer returns the paths in the layer of the given inode numbers (any
// one path of a hard-linked file); inodes it leaves out are dropped.
type Namer func(inos []uint32) map[uint32]string

// Recorder records the chunks one image's start reads, layer by layer, in
// first-access order, until the start goes quiet (Limits), then hands the
// profile to done, once.
type Recorder struct {
	manifest digest.Digest
	ref      string
	lim      Limits
	done     func(*Profile)

	mu           sync.Mutex
	ended        bool
	flushed      chan struct{} // closed when the Flush that ended the recording returns
	n            int
	layers       []*RecLayer
	quiet, total *time.Timer
}

// RecLayer is one layer of a recording.
type RecLayer struct {
	r         *Recorder
	blob, toc digest.Digest
	names     Namer
	acc       [][2]uint32 // (ino, chunk) in first-access order
}

// NewRecorder starts a recording for the image (manifest digest, may be
// empty, and reference). Its timers start with the first chunk read.
func NewRecorder(manifest digest.Digest, ref string, lim Limits, done func(*Profile)) *Recorder {
	return &Recorder{manifest: manifest, ref: ref, lim: lim.withDefaults(), done: done, flushed: make(chan struct{})}
}

// Layer adds a layer to the recording (the same blob again returns the
// layer already added).
func (r *Recorder) Layer(blob, toc digest.Digest, names Namer) *RecLayer {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, l := range r.layers {
		if l.blob == blob {
			return l
		}
	}
	l := &RecLayer{r: r, blob: blob, toc: toc, names: names}
	r.layers = append(r.layers, l)
	return l
}

// Add records that a reader needed chunk i of inode ino for the first
// time. After the recording ended it does nothing.
func (l *RecLayer) Add(ino uint32, chunk int) {
	r := l.r
	r.mu.Lock()
	if r.ended {
		r.mu.Unlock()
		return
	}
	l.acc = append(l.acc, [2]uint32{ino, uint32(chunk)})
	r.n++
	full := r.n >= r.lim.MaxChunks
	if !full {
		if r.quiet == nil {
			r.quiet = time.AfterFunc(r.lim.Quiet, r.Flush)
			r.total = time.AfterFunc(r.lim.Total, r.Flush)
		} else {
			r.quiet.Reset(r.lim.Quiet)
		}
	}
	r.mu.Unlock()
	if full {
		go r.Flush()
	}
}

// Ended reports whether the recording has ended.
func (r *Recorder) Ended() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.ended
}

// Flush ends the recording now (if it has not ended) and hands what it
// has to done, when it has anything; it returns after done does, also
// when another Flush (a timer's) ended the recording.
func (r *Recorder) Flush() {
	r.mu.Lock()
	if r.ended {
		r.mu.Unlock()
		<-r.flushed
		return
	}
	r.ended = true
	defer close(r.flushed)
	if r.quiet != nil {
		r.quiet.Stop()
		r.total.Stop()
	}
	layers := r.layers
	r.mu.Unlock()
	p := &Profile{Version: Version, Manifest: r.manifest, Ref: r.ref}
	for _, l := range layers { // l.acc no longer changes: ended
		if len(l.acc) == 0 {
			continue
		}
		seen := map[uint32]bool{}
		var inos []uint32
		for _, a := range l.acc {
			if !seen[a[0]] {
				seen[a[0]] = true
				inos = append(inos, a[0])
			}
		}
		names := l.names(inos)
		var chunks []Chunk
		for _, a := range l.acc {
			if name, ok := names[a[0]]; ok {
				chunks = append(chunks, Chunk{Path: name, Index: int(a[1])})
			}
		}
		if len(chunks) > 0 {
			p.Layers = append(p.Layers, NewLayer(l.blob, l.toc, chunks))
		}
	}
	if len(p.Layers) > 0 && r.done != nil {
		r.done(p)
	}
}
