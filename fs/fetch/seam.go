package fetch

import (
	"syscall"
	"time"

	"github.com/lazysnap/lazysnap/index"
)

// What a FUSE server (fs.Layer) reads of a Layer besides the fetching
// itself (Ensure, File, FilePresent, ContentPath, ReadAhead, NoteAccess,
// VerifyEntry, EntryRefused, EntryVerified, Bad, Poison).

// Index is the layer's index: the tree a server serves.
func (l *Layer) Index() *index.Index { return l.idx }

// NoteFUSERead counts a FUSE read of the layer (Stats.FuseReads).
func (l *Layer) NoteFUSERead() { l.fuseReads.Add(1) }

// NotePassthrough counts an open handed to the kernel (Stats.PassthroughOpens).
func (l *Layer) NotePassthrough() { l.passthrough.Add(1) }

// OnOp is Options.OnOp, for a mount of the layer to report its requests.
func (l *Layer) OnOp() func(op string, took time.Duration, errno syscall.Errno) {
	return l.opts.OnOp
}
