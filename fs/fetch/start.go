package fetch

import "github.com/lazysnap/lazysnap/index"

// PredictStart fetches, before any reader asks, what a container that
// executes the first of paths this layer holds reads first: that file (an
// executable whole, up to maxExecutable of it; another file's first
// chunk, all of a small one), and then, as after a cold read of it, what
// it says is read next (predictAfter: an ELF's interpreter, ld.so.cache
// and libraries, each looked at in turn). paths are absolute paths in the
// container's filesystem; symlinks within the layer are followed. It
// returns at once (the fetches are the layer's, as every predicted fetch)
// with the path it predicted from, "" when the layer holds none of them
// as a regular file or prediction is off (Options.NoPredict).
//
// The caller knows the paths from the image (its configuration's
// entrypoint or command): a guess, since a container may be started with
// another command, whose cost is the file and its libraries.
func (l *Layer) PredictStart(paths []string) string {
	if l.opts.NoPredict {
		return ""
	}
	for _, p := range paths {
		ino, ok := l.resolvePath(p)
		if !ok {
			continue
		}
		l.fetchPredicted(l.startIDs(ino), nil)
		return p
	}
	return ""
}

// PredictFiles fetches, before any reader asks, each of paths the layer
// holds as a regular file (its first chunk, all of a small one) and what
// it says is read next, as PredictStart does; it returns how many it
// found (none with prediction off).
func (l *Layer) PredictFiles(paths []string) int {
	if l.opts.NoPredict {
		return 0
	}
	var inos []index.Ino
	for _, p := range paths {
		if ino, ok := l.resolvePath(p); ok {
			inos = append(inos, ino)
		}
	}
	l.fetchPredicted(l.followFiles(inos, 0), nil)
	return len(inos)
}

// startIDs returns the chunks PredictStart fetches of ino: those it
// lacks of the file as an exec of it reads it (an executable's chunks up
// to maxExecutable, a small file's all, else its first), or, once its
// first is present, what the file says is read next.
func (l *Layer) startIDs(ino index.Ino) []int {
	n := l.idx.NumChunks(ino)
	if n == 0 {
		return nil
	}
	if l.isPresent(l.idx.ChunkID(ino, 0)) {
		return l.predictIDs(ino, 0)
	}
	ids := []int{l.idx.ChunkID(ino, 0)}
	if l.small(ino) || l.idx.Attr(ino).Mode&0o111 != 0 {
		ids = append(ids, l.afterFirst(ino)...)
	}
	return ids
}
