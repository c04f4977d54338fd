package fs_test

import (
	"bytes"
	"crypto/rand"
	"io"
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/lazysnap/lazysnap/estargz"
	lfs "github.com/lazysnap/lazysnap/fs"
	"github.com/lazysnap/lazysnap/fs/fetch"
	"github.com/lazysnap/lazysnap/index"
	"github.com/lazysnap/lazysnap/internal/testtar"
)

// handoverLayer is a layer of two random files (big: 4 MiB in 64 KiB
// chunks), and how to make another Layer of the same index and content
// directory, as a successor process would.
func handoverLayer(t *testing.T, opts fetch.Options) (l *fetch.Layer, blob *memBlob, again func(fetch.BlobReader) *fetch.Layer, content map[string][]byte) {
	t.Helper()
	content = map[string][]byte{"big": make([]byte, 4<<20), "dir/small": make([]byte, 1000)}
	for _, b := range content {
		rand.Read(b)
	}
	opts.ContentDir = t.TempDir()
	opts.Decoder = estargz.Decoder{}
	tarball := testtar.Files([][2]string{{"big", string(content["big"])}, {"dir/small", string(content["dir/small"])}})
	var x *index.Index
	l, blob, x = layerIndexed(t, tarball, opts, func(b *memBlob) fetch.BlobReader { return b }, estargz.WithChunkSize(64<<10))
	again = func(br fetch.BlobReader) *fetch.Layer {
		l2, err := fetch.NewLayer(x, br, opts)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { l2.Close() })
		return l2
	}
	return l, blob, again, content
}

// mountShared mounts l with an open table, for a successor to adopt.
func mountShared(t *testing.T, l *fetch.Layer) (string, *lfs.Mount) {
	t.Helper()
	requireFUSE(t)
	dir := t.TempDir()
	m, err := lfs.MountShared(l, dir, filepath.Join(t.TempDir(), "opens"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { syscall.Unmount(dir, syscall.MNT_DETACH) }) // whoever serves it then
	return dir, m
}

// adopt serves mnt in a successor layer from m's descriptor and session.
func adopt(t *testing.T, l *fetch.Layer, mnt string, fd *os.File, s lfs.Session) *lfs.Mount {
	t.Helper()
	defer fd.Close()
	m, err := lfs.Adopt(l, mnt, fd, s)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Unmount() })
	return m
}

func TestAdoptDetachedMount(t *testing.T) {
	l, blob, again, content := handoverLayer(t, fetch.Options{NoPrefetch: true, NoBackground: true})
	mnt, m := mountShared(t, l)
	f, err := os.Open(filepath.Join(mnt, "big")) // cached mode: big is not fetched
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	half := make([]byte, 2<<20)
	if _, err := io.ReadFull(f, half); err != nil || !bytes.Equal(half, content["big"][:2<<20]) {
		t.Fatalf("first half: %v", err)
	}
	fd, err := m.Dup()
	if err != nil {
		t.Fatal(err)
	}
	s := m.Session()
	m.Detach()
	l.Close()

	l2 := again(&memBlob{data: blob.data})
	adopt(t, l2, mnt, fd, s)
	// the file the predecessor opened, at the offset it left
	rest, err := io.ReadAll(f)
	if err != nil || !bytes.Equal(rest, content["big"][2<<20:]) {
		t.Fatalf("second half through the predecessor's handle: %d bytes, %v", len(rest), err)
	}
	// names the kernel cached (NodeIDs the predecessor gave) and new ones
	for name, want := range content {
		if got, err := os.ReadFile(filepath.Join(mnt, name)); err != nil || !bytes.Equal(got, want) {
			t.Errorf("%s after the handover: %v", name, err)
		}
	}
	if ents, err := os.ReadDir(filepath.Join(mnt, "dir")); err != nil || len(ents) != 1 || ents[0].Name() != "small" {
		t.Errorf("readdir after the handover: %v %v", ents, err)
	}
	if l2.Stats().FuseReads == 0 {
		t.Error("the successor served no read")
	}
}

func TestAdoptAfterCrashResendsUnanswered(t *testing.T) {
	l, blob, again, content := handoverLayer(t, fetch.Options{NoPrefetch: true, NoBackground: true})
	blob.set(func(b *memBlob) { b.gate = make(chan struct{}) }) // the predecessor's fetches never return
	mnt, m := mountShared(t, l)
	done := make(chan error, 1)
	go func() {
		got, err := os.ReadFile(filepath.Join(mnt, "dir/small"))
		if err == nil && !bytes.Equal(got, content["dir/small"]) {
			err = io.ErrUnexpectedEOF
		}
		done <- err
	}()
	waitFor(t, "the predecessor handles the read", func() bool { return blob.requests.Load() > 0 })
	fd, err := m.Dup()
	if err != nil {
		t.Fatal(err)
	}
	s := m.Session()
	m.Crash() // the READ it read is never answered

	l2 := again(&memBlob{data: blob.data})
	adopt(t, l2, mnt, fd, s)
	if err := guard(t, done, "the read the predecessor never answered"); err != nil {
		t.Fatal(err)
	}
	if l2.Stats().FuseReads == 0 {
		t.Error("the successor served no read: the kernel did not resend")
	}
}

func TestAdoptKeepsPassthroughOpens(t *testing.T) {
	l, blob, again, content := handoverLayer(t, fetch.Options{NoPrefetch: true, BackgroundQuiet: -1})
	mnt, m := mountShared(t, l)
	l.Start()
	waitFor(t, "background done", func() bool { return l.Stats().BackgroundDone })
	if !m.Passthrough() {
		t.Skip("kernel without FUSE passthrough")
	}
	f, err := os.Open(filepath.Join(mnt, "big"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if l.Stats().PassthroughOpens != 1 {
		t.Fatalf("%d passthrough opens", l.Stats().PassthroughOpens)
	}
	fd, err := m.Dup()
	if err != nil {
		t.Fatal(err)
	}
	s := m.Session()
	m.Crash()

	// the kernel allows the inode one backing file and no cached-mode
	// open while f is open: the successor must know of f
	l2 := again(&memBlob{data: blob.data})
	l2.Start()
	waitFor(t, "background done", func() bool { return l2.Stats().BackgroundDone })
	adopt(t, l2, mnt, fd, s)
	for range 2 {
		if got, err := os.ReadFile(filepath.Join(mnt, "big")); err != nil || !bytes.Equal(got, content["big"]) {
			t.Fatalf("big opened again after the handover: %v", err)
		}
	}
	if got, err := io.ReadAll(f); err != nil || !bytes.Equal(got, content["big"]) {
		t.Fatalf("big through the predecessor's passthrough handle: %v", err)
	}
}
