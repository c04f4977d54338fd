package fs

import (
	"context"
	"os"
	"syscall"
	"time"

	"github.com/lazysnap/lazysnap/fs/fetch"
	"github.com/lazysnap/lazysnap/index"
)

// Layer is what a mount serves: a layer's index, and its contents, made
// present on demand. fetch.Layer is the one implementation; the interface
// is the seam between serving FUSE and fetching chunks.
type Layer interface {
	// Index is the layer's tree: every inode, name and attribute a mount
	// answers with comes from it.
	Index() *index.Index
	// Ensure makes chunks [from, to] of ino present, for a read; its
	// errors go through Errno (a *fetch.Interrupted is EINTR).
	Ensure(ctx context.Context, ino index.Ino, from, to int) error
	// File is ino's content file, open for reads (kept open by the layer).
	File(ino index.Ino) (*os.File, error)
	// FilePresent reports whether every chunk of ino is present, and
	// ContentPath is then a complete file: what passthrough hands the
	// kernel.
	FilePresent(ino index.Ino) bool
	ContentPath(ino index.Ino) string
	// ReadAhead starts fetching chunks of ino from chunk i, for a
	// sequential reader.
	ReadAhead(ino index.Ino, i int)
	// NoteAccess records chunks [from, to] of ino as needed by a reader
	// that does not call Ensure (a passthrough open).
	NoteAccess(ino index.Ino, from, to int)
	// VerifyEntry verifies ino before it is served beyond its attributes
	// (refused: the layer contradicts the index, and the kernel is to
	// forget the attributes it holds); EntryRefused reports an inode
	// refused earlier, EntryVerified one verified.
	VerifyEntry(ctx context.Context, ino index.Ino) (refused bool, err error)
	EntryRefused(ino index.Ino) bool
	EntryVerified(ino index.Ino) bool
	// Bad is the panic that made the layer bad, or nil; Poison makes it
	// bad, for a request whose handler panicked.
	Bad() error
	Poison(r any) error
	// NoteFUSERead and NotePassthrough count reads and passthrough opens
	// in the layer's stats.
	NoteFUSERead()
	NotePassthrough()
	// OnOp, if not nil, is called after each request a mount handles.
	OnOp() func(op string, took time.Duration, errno syscall.Errno)
}

var _ Layer = (*fetch.Layer)(nil)
