package fs

import (
	"context"
	"fmt"
	"os"
	"sync"
	"syscall"
	"time"

	gofs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"github.com/lazysnap/lazysnap/index"
)

// node is one inode of the mounted layer.
type node struct {
	gofs.Inode
	l   *Layer
	ino index.Ino

	// The kernel refuses a passthrough open while the inode has files open
	// in cached mode (and the open fails with EIO), so passthrough waits
	// until no cached-mode handle is open.
	mu          sync.Mutex
	cachedOpens int
}

var (
	_ gofs.NodeLookuper       = (*node)(nil)
	_ gofs.NodeReaddirer      = (*node)(nil)
	_ gofs.NodeOpendirHandler = (*node)(nil)
	_ gofs.NodeGetattrer      = (*node)(nil)
	_ gofs.NodeReadlinker     = (*node)(nil)
	_ gofs.NodeOpener         = (*node)(nil)
	_ gofs.NodeGetxattrer     = (*node)(nil)
	_ gofs.NodeListxattrer    = (*node)(nil)
	_ gofs.NodeStatfser       = (*node)(nil)
)

// The kernel may cache everything: a layer never changes.
const cacheTimeout = 24 * time.Hour

// Opaque-directory xattrs for overlayfs: trusted.* for mounts by root,
// user.* for overlay mounts with the userxattr option.
var opaqueXattrs = [...]string{"trusted.overlay.opaque", "user.overlay.opaque"}

func (n *node) fillAttr(ino index.Ino, out *fuse.Attr) {
	a := n.l.idx.Attr(ino)
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

func (n *node) Getattr(ctx context.Context, f gofs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	n.fillAttr(n.ino, &out.Attr)
	out.SetTimeout(cacheTimeout)
	return 0
}

func (n *node) Lookup(ctx context.Context, name string, out *fuse.EntryOut) (*gofs.Inode, syscall.Errno) {
	ino, ok := n.l.idx.Lookup(n.ino, name)
	if !ok {
		return nil, syscall.ENOENT
	}
	n.fillAttr(ino, &out.Attr)
	out.SetEntryTimeout(cacheTimeout)
	out.SetAttrTimeout(cacheTimeout)
	child := &node{l: n.l, ino: ino}
	return n.NewInode(ctx, child, gofs.StableAttr{Mode: out.Attr.Mode & syscall.S_IFMT, Ino: uint64(ino) + 1}), 0
}

func (n *node) dirEntries() []fuse.DirEntry {
	ents := make([]fuse.DirEntry, 0, n.l.idx.NumEntries(n.ino))
	n.l.idx.ReadDir(n.ino, func(name string, ino index.Ino) bool {
		ents = append(ents, fuse.DirEntry{Name: name, Ino: uint64(ino) + 1, Mode: n.l.idx.Attr(ino).Mode & syscall.S_IFMT})
		return true
	})
	return ents
}

func (n *node) Readdir(ctx context.Context) (gofs.DirStream, syscall.Errno) {
	return gofs.NewListDirStream(n.dirEntries()), 0
}

// OpendirHandle lets the kernel cache directory listings (FOPEN_CACHE_DIR):
// a layer's directories never change, so a second walk never reaches us.
func (n *node) OpendirHandle(ctx context.Context, flags uint32) (gofs.FileHandle, uint32, syscall.Errno) {
	return &dirHandle{ents: n.dirEntries()}, fuse.FOPEN_CACHE_DIR | fuse.FOPEN_KEEP_CACHE, 0
}

// dirHandle is an open directory.
type dirHandle struct {
	ents []fuse.DirEntry
	pos  int
}

var (
	_ gofs.FileReaddirenter = (*dirHandle)(nil)
	_ gofs.FileSeekdirer    = (*dirHandle)(nil)
)

func (d *dirHandle) Readdirent(ctx context.Context) (*fuse.DirEntry, syscall.Errno) {
	if d.pos >= len(d.ents) {
		return nil, 0
	}
	d.pos++
	return &d.ents[d.pos-1], 0
}

func (d *dirHandle) Seekdir(ctx context.Context, off uint64) syscall.Errno {
	d.pos = int(min(off, uint64(len(d.ents))))
	return 0
}

func (n *node) Readlink(ctx context.Context) ([]byte, syscall.Errno) {
	target, ok := n.l.idx.Readlink(n.ino)
	if !ok {
		return nil, syscall.EINVAL
	}
	return []byte(target), 0
}

func (n *node) xattr(name string) ([]byte, bool) {
	if n.l.idx.Attr(n.ino).Opaque {
		for _, o := range opaqueXattrs {
			if name == o {
				return []byte("y"), true
			}
		}
	}
	v, ok := n.l.idx.Xattrs(n.ino)[name]
	return v, ok
}

func (n *node) Getxattr(ctx context.Context, attr string, dest []byte) (uint32, syscall.Errno) {
	v, ok := n.xattr(attr)
	if !ok {
		return 0, syscall.ENODATA
	}
	if len(dest) < len(v) {
		return uint32(len(v)), syscall.ERANGE
	}
	return uint32(copy(dest, v)), 0
}

func (n *node) Listxattr(ctx context.Context, dest []byte) (uint32, syscall.Errno) {
	var list []byte
	for k := range n.l.idx.Xattrs(n.ino) {
		list = append(append(list, k...), 0)
	}
	if n.l.idx.Attr(n.ino).Opaque {
		for _, o := range opaqueXattrs {
			list = append(append(list, o...), 0)
		}
	}
	if len(dest) < len(list) {
		return uint32(len(list)), syscall.ERANGE
	}
	return uint32(copy(dest, list)), 0
}

func (n *node) Statfs(ctx context.Context, out *fuse.StatfsOut) syscall.Errno {
	out.Bsize, out.Frsize, out.NameLen = 4096, 4096, 255
	out.Files = uint64(n.l.idx.Len())
	return 0
}

func (n *node) Open(ctx context.Context, flags uint32) (gofs.FileHandle, uint32, syscall.Errno) {
	if flags&(syscall.O_WRONLY|syscall.O_RDWR|syscall.O_TRUNC|syscall.O_APPEND) != 0 {
		return nil, 0, syscall.EROFS
	}
	if !n.l.idx.IsRegular(n.ino) {
		return nil, 0, syscall.EINVAL
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.cachedOpens == 0 && n.l.idx.NumChunks(n.ino) > 0 && n.l.filePresent(n.ino) {
		// every byte is verified and on disk: the kernel can read it directly
		if f, err := os.Open(n.l.contentPath(n.ino)); err == nil {
			// its reads never reach ensure: a learned profile records the
			// whole file now (read-around or prefetch made it complete)
			n.l.noteAccess(n.ino, 0, n.l.idx.NumChunks(n.ino)-1)
			n.l.passthrough.Add(1)
			return &handle{n: n, passFile: f}, fuse.FOPEN_KEEP_CACHE, 0
		}
	}
	n.cachedOpens++
	return &handle{n: n}, fuse.FOPEN_KEEP_CACHE, 0
}

// handle is an open file.
type handle struct {
	n        *node
	passFile *os.File // set when the content is complete: FUSE passthrough

	mu      sync.Mutex
	lastEnd int64 // where the previous read ended, to detect sequential reads
}

var (
	_ gofs.FileReader          = (*handle)(nil)
	_ gofs.FileReleaser        = (*handle)(nil)
	_ gofs.FilePassthroughFder = (*handle)(nil)
)

func (h *handle) PassthroughFd() (int, bool) {
	if h.passFile == nil {
		return 0, false
	}
	return int(h.passFile.Fd()), true
}

func (h *handle) Release(ctx context.Context) syscall.Errno {
	if h.passFile != nil {
		h.passFile.Close()
		return 0
	}
	h.n.mu.Lock()
	h.n.cachedOpens--
	h.n.mu.Unlock()
	return 0
}

func (h *handle) Read(ctx context.Context, dest []byte, off int64) (fuse.ReadResult, syscall.Errno) {
	l, ino := h.n.l, h.n.ino
	l.fuseReads.Add(1)
	size := l.idx.Attr(ino).Size
	if off >= size || len(dest) == 0 {
		return fuse.ReadResultData(nil), 0
	}
	end := min(off+int64(len(dest)), size)
	last := l.idx.ChunkIndex(ino, end-1)
	if err := l.ensure(ctx, ino, l.idx.ChunkIndex(ino, off), last); err != nil {
		return nil, Errno(err)
	}
	h.mu.Lock()
	sequential := off == h.lastEnd && off > 0
	h.lastEnd = end
	h.mu.Unlock()
	if sequential || last > 0 && off == 0 {
		l.readAhead(ino, last+1)
	}
	f, err := l.file(ino)
	if err != nil {
		return nil, Errno(err)
	}
	return fuse.ReadResultFd(f.Fd(), off, int(end-off)), 0
}

// Mount serves the layer at mountpoint until Unmount. It starts nothing in
// the background: call Layer.Start for prefetch and background fetch.
func (l *Layer) Mount(mountpoint string) (*Mount, error) {
	timeout := cacheTimeout
	root := &node{l: l, ino: index.Root}
	srv, err := gofs.Mount(mountpoint, root, &gofs.Options{
		MountOptions: fuse.MountOptions{
			FsName:        "lazysnap",
			Name:          "lazysnap",
			AllowOther:    true,
			DirectMount:   true,
			MaxReadAhead:  1 << 20,
			MaxBackground: 64,
			Options:       []string{"ro", "default_permissions"},
			// FUSE_ALLOW_IDMAP (Linux 6.12): the mount may be cloned into
			// idmapped mounts (mount_setattr MOUNT_ATTR_IDMAP), as
			// containerd does to a user-namespaced container's lower
			// dirs; each clone shows the layer's owners through its map,
			// nothing copied. The kernel checks permissions
			// (default_permissions), so the IDs the requests carry (-1
			// through an idmapped mount) are never looked at.
			IDMappedMount: true,
		},
		EntryTimeout:    &timeout,
		AttrTimeout:     &timeout,
		NegativeTimeout: &timeout,
		NullPermissions: true,
	})
	if err != nil {
		return nil, fmt.Errorf("fs: mounting %s: %w", mountpoint, err)
	}
	return &Mount{srv: srv}, nil
}

// Mount is a mounted layer.
type Mount struct{ srv *fuse.Server }

// Unmount unmounts the layer.
func (m *Mount) Unmount() error { return m.srv.Unmount() }

// IDMappable reports whether the kernel accepted FUSE_ALLOW_IDMAP: whether
// idmapped mounts of this mount can be made.
func (m *Mount) IDMappable() bool {
	return m.srv.KernelSettings().Flags64()&fuse.CAP_ALLOW_IDMAP != 0
}

// Passthrough reports whether the kernel accepted FUSE passthrough.
func (m *Mount) Passthrough() bool {
	return m.srv.KernelSettings().Flags64()&fuse.CAP_PASSTHROUGH != 0
}
