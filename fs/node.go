package fs

import (
	"os"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/hanwen/go-fuse/v2/fuse"
	"github.com/lazysnap/lazysnap/index"
)

// rawFS is the FUSE filesystem of a mounted layer, at go-fuse's raw
// protocol level. It holds no per-lookup state: a NodeID is the inode's
// index.Ino + 1 (so the root, Ino 0, is FUSE_ROOT_ID), the same in every
// process that serves the layer's index, and a file handle is a slot of
// the mount's open table (cached mode) or the kernel's backing ID
// (passthrough). A successor that adopts the mount resolves the NodeIDs and
// handles its predecessor gave the kernel.
type rawFS struct {
	fuse.RawFileSystem // the default: ENOSYS for what a read-only layer does not do
	l                  Layer
	idx                *index.Index // l.Index()
	opens              *openTable
	srv                *server
}

// The kernel may cache everything: a layer never changes.
const cacheTimeout = 24 * time.Hour

// Opaque-directory xattrs for overlayfs: trusted.* for mounts by root,
// user.* for overlay mounts with the userxattr option.
var opaqueXattrs = [...]string{"trusted.overlay.opaque", "user.overlay.opaque"}

// ino resolves a NodeID, or reports that it names no inode of the layer.
func (fs *rawFS) ino(nodeID uint64) (index.Ino, bool) {
	if nodeID == 0 || nodeID > uint64(fs.idx.Len()) {
		return 0, false
	}
	return index.Ino(nodeID - 1), true
}

func (fs *rawFS) fillAttr(ino index.Ino, out *fuse.Attr) {
	a := fs.idx.Attr(ino)
	out.Ino = uint64(ino) + 1
	out.Mode = a.Mode
	out.Size = uint64(a.Size)
	out.Blocks = uint64(a.Blocks)
	out.Nlink = a.Nlink
	out.Owner = fuse.Owner{Uid: a.UID, Gid: a.GID}
	out.Mtime, out.Atime, out.Ctime = uint64(a.Mtime), uint64(a.Mtime), uint64(a.Mtime)
	out.Rdev = a.Rdev
	out.Blksize = 4096
}

func (fs *rawFS) fillEntry(ino index.Ino, out *fuse.EntryOut) {
	out.NodeId = uint64(ino) + 1
	fs.fillAttr(ino, &out.Attr)
	out.SetEntryTimeout(cacheTimeout)
	out.SetAttrTimeout(cacheTimeout)
}

func (fs *rawFS) String() string { return "lazysnap" }

func (fs *rawFS) Lookup(cancel <-chan struct{}, h *fuse.InHeader, name string, out *fuse.EntryOut) fuse.Status {
	dir, ok := fs.ino(h.NodeId)
	if !ok || !fs.idx.IsDir(dir) {
		return fuse.Status(syscall.ENOTDIR)
	}
	ino, ok := fs.idx.Lookup(dir, name)
	if !ok {
		// a negative entry, cached as long as the positive ones
		out.NodeId = 0
		out.SetEntryTimeout(cacheTimeout)
		return fuse.OK
	}
	if fs.l.EntryRefused(ino) {
		return fuse.EIO
	}
	if isDevice(fs.idx.Attr(ino).Mode) {
		if st := fs.verify(cancel, h.Caller, ino); st != fuse.OK {
			return st
		}
	}
	fs.fillEntry(ino, out)
	return fuse.OK
}

// Forget: NodeIDs are the index's, nothing to drop.
func (fs *rawFS) Forget(nodeID, nlookup uint64) {}

func (fs *rawFS) GetAttr(cancel <-chan struct{}, in *fuse.GetAttrIn, out *fuse.AttrOut) fuse.Status {
	ino, ok := fs.ino(in.NodeId)
	if !ok {
		return fuse.ENOENT
	}
	if fs.l.EntryRefused(ino) {
		return fuse.EIO
	}
	fs.fillAttr(ino, &out.Attr)
	out.SetTimeout(cacheTimeout)
	return fuse.OK
}

// verify is Layer.VerifyEntry for a request: an inode the layer
// contradicts is refused, and the attributes the kernel holds of it (the
// index's, which a stat or a listing gave it) are dropped, so that its
// next stat asks, and fails, rather than show them.
func (fs *rawFS) verify(cancel <-chan struct{}, caller fuse.Caller, ino index.Ino) fuse.Status {
	refused, err := fs.l.VerifyEntry(&fuse.Context{Caller: caller, Cancel: cancel}, ino)
	if refused {
		fs.srv.invalAttr(uint64(ino) + 1)
	}
	if err != nil {
		return fuse.Status(Errno(err))
	}
	return fuse.OK
}

func (fs *rawFS) Readlink(cancel <-chan struct{}, h *fuse.InHeader) ([]byte, fuse.Status) {
	ino, ok := fs.ino(h.NodeId)
	if !ok {
		return nil, fuse.ENOENT
	}
	target, ok := fs.idx.Readlink(ino)
	if !ok {
		return nil, fuse.EINVAL
	}
	if st := fs.verify(cancel, h.Caller, ino); st != fuse.OK {
		return nil, st
	}
	return []byte(target), fuse.OK
}

func (fs *rawFS) xattrs(ino index.Ino) (map[string][]byte, bool) {
	return fs.idx.Xattrs(ino), fs.idx.Attr(ino).Opaque
}

// overlayXattr reports whether name is overlayfs's own metadata
// (trusted.overlay.*, or user.overlay.* for mounts with userxattr). A
// layer's own are never served: overlayfs reads them of its lower layers
// for opaque directories, redirects, metacopy files and origins, and an
// image's content does not get to steer it. An image marks a directory
// opaque with a .wh..wh..opq entry, which the index turns into the opaque
// xattr; that is the one served. So the getxattr calls overlayfs makes on
// every lower file and directory it looks up (metacopy, origin) need no
// entry check: their answer is not the index's word.
func overlayXattr(name string) bool {
	return strings.HasPrefix(name, "trusted.overlay.") || strings.HasPrefix(name, "user.overlay.")
}

func (fs *rawFS) GetXAttr(cancel <-chan struct{}, h *fuse.InHeader, attr string, dest []byte) (uint32, fuse.Status) {
	ino, ok := fs.ino(h.NodeId)
	if !ok {
		return 0, fuse.ENOENT
	}
	if fs.l.EntryRefused(ino) {
		return 0, fuse.EIO
	}
	xs, opaque := fs.xattrs(ino)
	if overlayXattr(attr) && (!opaque || !slices.Contains(opaqueXattrs[:], attr)) {
		// (an absent opaque mark is an entry the index lacks, which no
		// header vouches for: the complete layer's check does)
		return 0, fuse.ENOATTR
	}
	if st := fs.verify(cancel, h.Caller, ino); st != fuse.OK {
		return 0, st
	}
	v, ok := xs[attr]
	if overlayXattr(attr) {
		v, ok = []byte("y"), true // the opaque mark, checked with its directory
	}
	if !ok {
		return 0, fuse.ENOATTR
	}
	if len(dest) < len(v) {
		return uint32(len(v)), fuse.ERANGE
	}
	return uint32(copy(dest, v)), fuse.OK
}

func (fs *rawFS) ListXAttr(cancel <-chan struct{}, h *fuse.InHeader, dest []byte) (uint32, fuse.Status) {
	ino, ok := fs.ino(h.NodeId)
	if !ok {
		return 0, fuse.ENOENT
	}
	if st := fs.verify(cancel, h.Caller, ino); st != fuse.OK {
		return 0, st
	}
	xs, opaque := fs.xattrs(ino)
	var list []byte
	for k := range xs {
		if !overlayXattr(k) {
			list = append(append(list, k...), 0)
		}
	}
	if opaque {
		for _, o := range opaqueXattrs {
			list = append(append(list, o...), 0)
		}
	}
	if len(dest) < len(list) {
		return uint32(len(list)), fuse.ERANGE
	}
	return uint32(copy(dest, list)), fuse.OK
}

func (fs *rawFS) StatFs(cancel <-chan struct{}, h *fuse.InHeader, out *fuse.StatfsOut) fuse.Status {
	out.Bsize, out.Frsize, out.NameLen = 4096, 4096, 255
	out.Files = uint64(fs.idx.Len())
	return fuse.OK
}

func (fs *rawFS) Access(cancel <-chan struct{}, in *fuse.AccessIn) fuse.Status {
	if in.Mask&2 != 0 { // W_OK
		return fuse.EROFS
	}
	return fuse.OK
}

// OpenDir lets the kernel cache directory listings (FOPEN_CACHE_DIR): a
// layer's directories never change, so a second walk never reaches us.
// The handle is none: ReadDir reads the index at the offset.
//
// A directory is not verified to be listed: what a listing shows is the
// index's names and what stat shows of them, which no tar header vouches
// for (the complete layer's check does), and a directory's own header
// says nothing of its entries. Checking it here fetched, for each
// directory a start lists (Python lists every package it imports from),
// the span holding its header: most of a layer.
func (fs *rawFS) OpenDir(cancel <-chan struct{}, in *fuse.OpenIn, out *fuse.OpenOut) fuse.Status {
	ino, ok := fs.ino(in.NodeId)
	if !ok || !fs.idx.IsDir(ino) {
		return fuse.Status(syscall.ENOTDIR)
	}
	if fs.l.EntryRefused(ino) {
		return fuse.EIO
	}
	out.OpenFlags = fuse.FOPEN_CACHE_DIR | fuse.FOPEN_KEEP_CACHE
	return fuse.OK
}

func (fs *rawFS) ReleaseDir(in *fuse.ReleaseIn) {}

func (fs *rawFS) ReadDir(cancel <-chan struct{}, in *fuse.ReadIn, out *fuse.DirEntryList) fuse.Status {
	return fs.readDir(in, out, false)
}

func (fs *rawFS) ReadDirPlus(cancel <-chan struct{}, in *fuse.ReadIn, out *fuse.DirEntryList) fuse.Status {
	return fs.readDir(in, out, true)
}

// readDir lists a directory from entry in.Offset on: an entry's offset is
// its position + 1, the same in every process.
func (fs *rawFS) readDir(in *fuse.ReadIn, out *fuse.DirEntryList, plus bool) fuse.Status {
	dir, ok := fs.ino(in.NodeId)
	if !ok || !fs.idx.IsDir(dir) {
		return fuse.Status(syscall.ENOTDIR)
	}
	i := uint64(0)
	fs.idx.ReadDir(dir, func(name string, ino index.Ino) bool {
		i++
		if i <= in.Offset {
			return true
		}
		e := fuse.DirEntry{Name: name, Ino: uint64(ino) + 1, Mode: fs.idx.Attr(ino).Mode & syscall.S_IFMT, Off: i}
		if !plus {
			return out.AddDirEntry(e)
		}
		eo := out.AddDirLookupEntry(e)
		if eo == nil {
			return false
		}
		if isDevice(e.Mode) && !fs.l.EntryVerified(ino) || fs.l.EntryRefused(ino) {
			return true // no attributes (NodeId 0): the kernel looks it up, which verifies it
		}
		fs.fillEntry(ino, eo)
		return true
	})
	return fuse.OK
}

func (fs *rawFS) Open(cancel <-chan struct{}, in *fuse.OpenIn, out *fuse.OpenOut) fuse.Status {
	if in.Flags&(syscall.O_WRONLY|syscall.O_RDWR|syscall.O_TRUNC|syscall.O_APPEND) != 0 {
		return fuse.EROFS
	}
	ino, ok := fs.ino(in.NodeId)
	if !ok {
		return fuse.ENOENT
	}
	if !fs.idx.IsRegular(ino) {
		return fuse.EINVAL
	}
	l := fs.l
	if err := l.Bad(); err != nil {
		return fuse.Status(Errno(err)) // nothing of a bad layer is served, not even what is present
	}
	if st := fs.verify(cancel, in.Caller, ino); st != fuse.OK {
		return st
	}
	slot, backingID, err := fs.opens.open(ino, func() (int32, bool) {
		// every byte is verified and on disk: the kernel can read it
		// directly
		if !fs.srv.passthrough() || fs.idx.NumChunks(ino) == 0 || !l.FilePresent(ino) {
			return 0, false
		}
		f, err := os.Open(l.ContentPath(ino))
		if err != nil {
			return 0, false
		}
		defer f.Close() // the kernel holds its own reference once registered
		id, errno := fs.srv.registerBacking(f)
		return id, errno == 0
	})
	if err != nil {
		return fuse.Status(syscall.ENFILE)
	}
	out.Fh = uint64(slot) + 1
	if backingID == 0 {
		out.OpenFlags = fuse.FOPEN_KEEP_CACHE
		return fuse.OK
	}
	// its reads never reach ensure: a learned profile records the whole
	// file now (read-around or prefetch made it complete)
	l.NoteAccess(ino, 0, fs.idx.NumChunks(ino)-1)
	l.NotePassthrough()
	out.BackingID = backingID
	out.OpenFlags = fuse.FOPEN_PASSTHROUGH
	return fuse.OK
}

func (fs *rawFS) Release(cancel <-chan struct{}, in *fuse.ReleaseIn) {
	if id, ok := fs.opens.release(int(in.Fh) - 1); ok {
		fs.srv.closeBacking(id)
	}
}

func (fs *rawFS) Read(cancel <-chan struct{}, in *fuse.ReadIn, dest []byte) (fuse.ReadResult, fuse.Status) {
	ino, ok := fs.ino(in.NodeId)
	if !ok || !fs.idx.IsRegular(ino) {
		return nil, fuse.EINVAL
	}
	l := fs.l
	l.NoteFUSERead()
	off := int64(in.Offset)
	size := fs.idx.Attr(ino).Size
	if off >= size || len(dest) == 0 {
		return fuse.ReadResultData(nil), fuse.OK
	}
	end := min(off+int64(len(dest)), size)
	last := fs.idx.ChunkIndex(ino, end-1)
	if err := l.Ensure(&fuse.Context{Caller: in.Caller, Cancel: cancel}, ino, fs.idx.ChunkIndex(ino, off), last); err != nil {
		return nil, fuse.Status(Errno(err))
	}
	if in.Fh != 0 {
		sequential := fs.opens.swapLastEnd(int(in.Fh-1), end) == off && off > 0
		if sequential || last > 0 && off == 0 {
			l.ReadAhead(ino, last+1)
		}
	}
	f, err := l.File(ino)
	if err != nil {
		return nil, fuse.Status(Errno(err))
	}
	n, err := f.ReadAt(dest[:end-off], off)
	if n < int(end-off) {
		return nil, fuse.Status(Errno(err))
	}
	return fuse.ReadResultData(dest[:n]), fuse.OK
}

// isDevice reports whether mode is a device node's (what a lookup
// verifies before it returns the node: a whiteout is one too).
func isDevice(mode uint32) bool {
	t := mode & syscall.S_IFMT
	return t == syscall.S_IFCHR || t == syscall.S_IFBLK
}
