package fetch

// The store: verified chunks written into per-file content files.

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"

	"github.com/lazysnap/lazysnap/index"
	"github.com/lazysnap/lazysnap/layer"
)

// store verifies one chunk from its compressed bytes (refetching it once if
// they are wrong and refetch is set) and writes it into the file's content.
func (l *Layer) store(ctx context.Context, id int, c *layer.Chunk, raw []byte, refetch bool) error {
	if err := l.Bad(); err != nil {
		return err // nothing more of a bad layer is decoded
	}
	data, err := l.opts.Decoder.Decode(nil, c, raw)
	if err != nil {
		l.recent.drop(c.Offset, c.CompressedSize())
		if inv, ok := l.blob.(Invalidator); ok {
			inv.Invalidate(c.Offset, c.CompressedSize())
		}
		if !refetch {
			return l.fail(fmt.Errorf("fetch: layer %s: chunk at %d+%d: %w", l.opts.Name, c.Offset, c.CompressedSize(), err))
		}
		raw, err = l.fetchRange(ctx, c.Offset, c.CompressedSize(), true)
		if err != nil {
			return err
		}
		if data, err = l.opts.Decoder.Decode(nil, c, raw); err != nil {
			return l.fail(fmt.Errorf("fetch: layer %s: chunk at %d+%d: %w", l.opts.Name, c.Offset, c.CompressedSize(), err))
		}
	}
	if err := l.writeAt(l.owner[id], data, c.FileOffset); err != nil {
		return l.fail(fmt.Errorf("fetch: layer %s: storing chunk: %w", l.opts.Name, err))
	}
	l.markPresent(id)
	return nil
}

// writeAt writes verified bytes into ino's content file: through the
// file readers hold open when there is one, else through a descriptor of
// its own, closed after, so that a layer whose background fetch stores
// 100k files does not hold 100k descriptors (the process ran out of them).
func (l *Layer) writeAt(ino index.Ino, data []byte, off int64) error {
	l.mu.Lock()
	f, cached := l.files[ino]
	closed := l.closed
	l.mu.Unlock()
	if closed {
		return ErrClosed
	}
	if !cached {
		var err error
		if f, err = l.openContent(ino); err != nil {
			return err
		}
		defer f.Close()
	}
	_, err := f.WriteAt(data, off)
	return err
}

// ContentPath is the path of ino's content file (complete once
// FilePresent: what a server hands the kernel for passthrough).
func (l *Layer) ContentPath(ino index.Ino) string {
	return filepath.Join(l.opts.ContentDir, strconv.FormatUint(uint64(ino), 10))
}

// File returns ino's content file for readers, creating it at its full
// (sparse) size, and keeps it open until Close.
func (l *Layer) File(ino index.Ino) (*os.File, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return nil, ErrClosed
	}
	if f, ok := l.files[ino]; ok {
		return f, nil
	}
	f, err := l.openContent(ino)
	if err != nil {
		return nil, err
	}
	l.files[ino] = f
	return f, nil
}

// openContent opens ino's content file, creating it at its full (sparse)
// size.
func (l *Layer) openContent(ino index.Ino) (*os.File, error) {
	f, err := os.OpenFile(l.ContentPath(ino), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("fetch: content file: %w", err)
	}
	if err := f.Truncate(l.idx.Attr(ino).Size); err != nil {
		f.Close()
		return nil, fmt.Errorf("fetch: content file: %w", err)
	}
	return f, nil
}
