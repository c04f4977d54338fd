package fs_test

import (
	"archive/tar"
	"bytes"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/lazysnap/lazysnap/estargz"
	"github.com/lazysnap/lazysnap/fs/fetch"
	"github.com/lazysnap/lazysnap/internal/testtar"
	"golang.org/x/sys/unix"
)

var tarType = map[byte]uint32{
	tar.TypeReg: syscall.S_IFREG, tar.TypeDir: syscall.S_IFDIR, tar.TypeSymlink: syscall.S_IFLNK,
	tar.TypeChar: syscall.S_IFCHR, tar.TypeBlock: syscall.S_IFBLK, tar.TypeFifo: syscall.S_IFIFO,
}

// compareMount checks every entry of the source tar against the mount.
func compareMount(t *testing.T, mnt string, src map[string]*testtar.Entry) {
	t.Helper()
	links := map[string]int{}
	for _, s := range src {
		if s.Header.Typeflag == tar.TypeLink {
			target := testtar.Clean(s.Header.Linkname)
			for src[target].Header.Typeflag == tar.TypeLink {
				target = testtar.Clean(src[target].Header.Linkname)
			}
			links[target]++
		}
	}
	for _, name := range testtar.Names(src) {
		h := &src[name].Header
		base := filepath.Base(name)
		if strings.HasPrefix(base, ".wh.") {
			continue // whiteouts are presented differently; see TestOverlay
		}
		p := filepath.Join(mnt, name)
		var st syscall.Stat_t
		if err := syscall.Lstat(p, &st); err != nil {
			t.Errorf("%q: %v", name, err)
			continue
		}
		content := src[name].Content
		if h.Typeflag == tar.TypeLink {
			target := testtar.Clean(h.Linkname)
			for src[target].Header.Typeflag == tar.TypeLink {
				target = testtar.Clean(src[target].Header.Linkname)
			}
			h, content = &src[target].Header, src[target].Content
		}
		if want := tarType[h.Typeflag] | uint32(h.Mode&0o7777); st.Mode != want {
			t.Errorf("%q: mode %o, want %o", name, st.Mode, want)
		}
		if st.Uid != uint32(h.Uid) || st.Gid != uint32(h.Gid) || st.Mtim.Sec != h.ModTime.Unix() {
			t.Errorf("%q: owner/mtime %d:%d %d, want %d:%d %d", name, st.Uid, st.Gid, st.Mtim.Sec, h.Uid, h.Gid, h.ModTime.Unix())
		}
		switch h.Typeflag {
		case tar.TypeReg:
			if st.Size != h.Size || st.Blocks != (h.Size+511)/512 {
				t.Errorf("%q: size %d blocks %d", name, st.Size, st.Blocks)
			}
			if want := uint64(1 + links[testtar.Clean(h.Name)]); st.Nlink != want {
				t.Errorf("%q: nlink %d, want %d", name, st.Nlink, want)
			}
			got, err := os.ReadFile(p)
			if err != nil || !bytes.Equal(got, content) {
				t.Errorf("%q: content differs (%v)", name, err)
			}
		case tar.TypeSymlink:
			if l, err := os.Readlink(p); err != nil || l != h.Linkname {
				t.Errorf("%q: readlink %q %v", name, l, err)
			}
		case tar.TypeChar, tar.TypeBlock:
			if unix.Major(st.Rdev) != uint32(h.Devmajor) || unix.Minor(st.Rdev) != uint32(h.Devminor) {
				t.Errorf("%q: rdev %d:%d", name, unix.Major(st.Rdev), unix.Minor(st.Rdev))
			}
		case tar.TypeDir:
			ents, err := os.ReadDir(p)
			if err != nil {
				t.Errorf("%q: readdir: %v", name, err)
			}
			for _, e := range ents {
				if _, ok := src[testtar.Clean(filepath.Join(name, e.Name()))]; !ok && !strings.HasPrefix(e.Name(), ".") && !isWhiteoutTarget(src, name, e.Name()) && !isImplicitDir(src, filepath.Join(name, e.Name())) {
					t.Errorf("%q: unexpected entry %q", name, e.Name())
				}
			}
		}
		for k, v := range testtar.Xattrs(h) {
			buf := make([]byte, 256)
			n, err := unix.Lgetxattr(p, k, buf)
			if err != nil || string(buf[:n]) != v {
				t.Errorf("%q: xattr %s = %q, %v", name, k, buf[:max(n, 0)], err)
			}
		}
	}
}

func isWhiteoutTarget(src map[string]*testtar.Entry, dir, name string) bool {
	_, ok := src[testtar.Clean(filepath.Join(dir, ".wh."+name))]
	return ok
}

func isImplicitDir(src map[string]*testtar.Entry, name string) bool {
	prefix := testtar.Clean(name) + "/"
	for n := range src {
		if strings.HasPrefix(n, prefix) {
			return true
		}
	}
	return false
}

func TestMountSynthetic(t *testing.T) {
	tarball := testtar.Synthetic(9 << 20)
	src, err := testtar.Read(tarball)
	if err != nil {
		t.Fatal(err)
	}
	l, blob := layerOf(t, tarball, fetch.Options{Name: "synthetic", NoPrefetch: true, NoBackground: true}, estargz.WithChunkSize(1<<20))
	mnt, _ := mount(t, l)

	// a small file costs one small request, not the layer
	if got, err := os.ReadFile(filepath.Join(mnt, "etc/hostname")); err != nil || string(got) != "lazysnap\n" {
		t.Fatalf("etc/hostname = %q, %v", got, err)
	}
	if n, b := blob.requests.Load(), blob.bytes.Load(); n != 1 || b > 4096 {
		t.Errorf("reading one small file cost %d requests, %d bytes", n, b)
	}
	compareMount(t, mnt, src)

	// whiteouts and the opaque directory as overlayfs expects them
	var st syscall.Stat_t
	if err := syscall.Lstat(filepath.Join(mnt, "x/deleted"), &st); err != nil || st.Mode != syscall.S_IFCHR || st.Rdev != 0 {
		t.Errorf("whiteout x/deleted: %v mode %o rdev %d", err, st.Mode, st.Rdev)
	}
	buf := make([]byte, 8)
	for _, attr := range []string{"trusted.overlay.opaque", "user.overlay.opaque"} {
		if n, err := unix.Lgetxattr(filepath.Join(mnt, "opaque"), attr, buf); err != nil || string(buf[:n]) != "y" {
			t.Errorf("opaque dir %s: %q %v", attr, buf[:max(n, 0)], err)
		}
	}
	if _, err := unix.Lgetxattr(filepath.Join(mnt, "usr"), "trusted.overlay.opaque", buf); !errors.Is(err, unix.ENODATA) {
		t.Errorf("usr is opaque: %v", err)
	}
	for _, hidden := range []string{estargz.NoPrefetchLandmark, "x/.wh.deleted", "opaque/.wh..wh..opq", estargz.TOCTarName} {
		if _, err := os.Lstat(filepath.Join(mnt, hidden)); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s visible: %v", hidden, err)
		}
	}
	if err := os.WriteFile(filepath.Join(mnt, "etc/hostname"), []byte("x"), 0o644); !errors.Is(err, syscall.EROFS) && !errors.Is(err, syscall.EACCES) && !errors.Is(err, syscall.EPERM) {
		t.Errorf("write succeeded or wrong error: %v", err)
	}
}

func TestConcurrentColdReadersFetchOnce(t *testing.T) {
	tarball := testtar.Synthetic(8 << 20)
	l, blob := layerOf(t, tarball, fetch.Options{NoPrefetch: true, NoBackground: true, ReadAhead: 1}, estargz.WithChunkSize(1<<20))
	mnt, _ := mount(t, l)
	want := mustRead(t, tarball, "big")
	var wg sync.WaitGroup
	errs := make(chan error, 100)
	for range 100 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			got, err := os.ReadFile(filepath.Join(mnt, "big"))
			if err == nil && !bytes.Equal(got, want) {
				err = errors.New("wrong content")
			}
			errs <- err
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	if n := blob.requests.Load(); n > 8 {
		t.Errorf("100 readers of an 8-chunk file caused %d requests, want at most 8", n)
	}
}

func mustRead(t *testing.T, tarball []byte, name string) []byte {
	src, err := testtar.Read(tarball)
	if err != nil {
		t.Fatal(err)
	}
	return src[name].Content
}

func TestFaultsNeverServeWrongBytes(t *testing.T) {
	tarball := testtar.Synthetic(2 << 20)
	var mu sync.Mutex
	var reported []string
	l, blob := layerOf(t, tarball, fetch.Options{Name: "sha256:feed", NoPrefetch: true, NoBackground: true, OnError: func(err error) {
		mu.Lock()
		reported = append(reported, err.Error())
		mu.Unlock()
	}})
	mnt, _ := mount(t, l)
	for _, tc := range []struct {
		name  string
		file  string
		fault func(b *memBlob)
	}{
		{"registry down", "usr/bin/tool", func(b *memBlob) { b.fail = errors.New("connection refused") }},
		{"corrupt bytes", "big", func(b *memBlob) { b.corrupt = true }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			blob.set(tc.fault)
			_, err := os.ReadFile(filepath.Join(mnt, tc.file))
			if !errors.Is(err, syscall.EIO) {
				t.Fatalf("read during fault: %v, want EIO", err)
			}
			blob.set(func(b *memBlob) { b.fail, b.corrupt = nil, false })
			got, err := os.ReadFile(filepath.Join(mnt, tc.file))
			if err != nil || !bytes.Equal(got, mustRead(t, tarball, tc.file)) {
				t.Fatalf("read after fault: %v", err)
			}
		})
	}
	mu.Lock()
	defer mu.Unlock()
	if len(reported) == 0 || !strings.Contains(reported[0], "sha256:feed") || !strings.Contains(reported[0], "range") {
		t.Errorf("errors reported: %q", reported)
	}
}

func TestPrefetchBackgroundPassthrough(t *testing.T) {
	tarball := testtar.Synthetic(6 << 20)
	src, _ := testtar.Read(tarball)
	l, blob := layerOf(t, tarball, fetch.Options{}, estargz.WithPrioritizedFiles([]string{"etc/hostname", "usr/bin/tool"}), estargz.WithChunkSize(1<<20))
	mnt, m := mount(t, l)
	l.Start()
	deadline := time.Now().Add(30 * time.Second)
	for !l.Stats().BackgroundDone && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	st := l.Stats()
	if !st.PrefetchDone || !st.BackgroundDone || st.ChunksPresent != st.Chunks {
		t.Fatalf("background fetch incomplete: %+v", st)
	}
	if st.FetchedBytes > int64(len(blob.data)) {
		t.Errorf("fetched %d bytes of a %d-byte blob", st.FetchedBytes, len(blob.data))
	}
	before := blob.requests.Load()
	readsBefore := l.Stats().FuseReads
	for _, name := range []string{"big", "usr/bin/tool", "many/file-100"} {
		got, err := os.ReadFile(filepath.Join(mnt, name))
		if err != nil || !bytes.Equal(got, src[name].Content) {
			t.Fatalf("%s: %v", name, err)
		}
	}
	if n := blob.requests.Load() - before; n != 0 {
		t.Errorf("reads after background fetch caused %d requests", n)
	}
	if m.Passthrough() {
		if n := l.Stats().FuseReads - readsBefore; n != 0 {
			t.Errorf("passthrough: %d reads still came to the daemon", n)
		}
		if l.Stats().PassthroughOpens == 0 {
			t.Errorf("no passthrough opens")
		}
	} else {
		t.Logf("kernel without FUSE passthrough: reads served by the daemon")
	}
}

func TestPrefetchFetchesPrioritizedFirst(t *testing.T) {
	tarball := testtar.Synthetic(6 << 20)
	l, blob := layerOf(t, tarball, fetch.Options{NoBackground: true}, estargz.WithPrioritizedFiles([]string{"etc/hostname"}))
	mnt, _ := mount(t, l)
	l.Start()
	for !l.Stats().PrefetchDone {
		time.Sleep(5 * time.Millisecond)
	}
	st := l.Stats()
	if st.ChunksPresent == 0 || st.ChunksPresent == st.Chunks || st.Requests != 1 {
		t.Fatalf("prefetch: %+v", st)
	}
	before := blob.requests.Load()
	if got, err := os.ReadFile(filepath.Join(mnt, "etc/hostname")); err != nil || string(got) != "lazysnap\n" {
		t.Fatalf("read: %q %v", got, err)
	}
	if blob.requests.Load() != before {
		t.Errorf("prefetched file fetched again")
	}
}

// TestPrefetchStreams: with a BlobReader that streams, the prefetched
// chunks whose bytes have arrived are present (verified, stored) before
// the rest of the span has come; a stream that fails leaves those and
// fails only the others.
func TestPrefetchStreams(t *testing.T) {
	tarball := testtar.Synthetic(2 << 20)
	prio := []string{"etc/hostname", "usr/bin/tool", "big"}
	for _, tc := range []struct {
		name string
		fail error
	}{
		{name: "complete"},
		{name: "fails half-way", fail: errors.New("connection reset")},
	} {
		t.Run(tc.name, func(t *testing.T) {
			halfway, hold := make(chan struct{}), make(chan struct{})
			l, _ := layerOver(t, tarball, fetch.Options{NoBackground: true}, func(b *memBlob) fetch.BlobReader {
				return &streamBlob{memBlob: b, halfway: halfway, hold: hold, failAfterHalf: tc.fail}
			}, estargz.WithPrioritizedFiles(prio), estargz.WithChunkSize(64<<10))
			l.Start()
			deadline := time.Now().Add(10 * time.Second)
			select {
			case <-halfway:
			case <-time.After(10 * time.Second):
				t.Fatal("the prefetch did not stream")
			}
			half := l.Stats().ChunksPresent
			if half == 0 || l.Stats().PrefetchDone {
				t.Fatalf("no chunk present while the span is half-way: %+v", l.Stats())
			}
			close(hold)
			for !l.Stats().PrefetchDone && time.Now().Before(deadline) {
				time.Sleep(2 * time.Millisecond)
			}
			st := l.Stats()
			if st.Requests != 1 {
				t.Errorf("prefetch made %d requests, want 1", st.Requests)
			}
			if tc.fail == nil && (st.ChunksPresent <= half || st.Errors != 0) {
				t.Errorf("after the stream: %+v (half-way %d)", st, half)
			}
			if tc.fail != nil && (st.ChunksPresent != half || st.Errors != 1) {
				t.Errorf("after the failed stream: %+v, want the %d chunks of its first half and one error", st, half)
			}
		})
	}
}

// TestStreamedSpanResetIsEIO: a streamed span that fails half-way with a
// reset connection (the errno a socket read returns, wrapped as the
// fetcher's transport wraps it) reaches a reader through the mount as EIO,
// not as the socket's ECONNRESET.
func TestStreamedSpanResetIsEIO(t *testing.T) {
	tarball := testtar.Synthetic(2 << 20)
	for _, tc := range []struct {
		name string
		fail error
	}{
		{"connection reset", fmt.Errorf("fetcher: registry unavailable: get range: %w", &net.OpError{Op: "read", Net: "tcp", Err: os.NewSyscallError("read", syscall.ECONNRESET)})},
		{"broken pipe", fmt.Errorf("stream: %w", syscall.EPIPE)},
		{"timed out", fmt.Errorf("stream: %w", syscall.ETIMEDOUT)},
		{"a network ENOENT", &os.PathError{Op: "open", Path: "/cache/x", Err: syscall.ENOENT}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			sb := &streamBlob{halfway: make(chan struct{}), failAfterHalf: tc.fail}
			l, _ := layerOver(t, tarball, fetch.Options{NoPrefetch: true, NoBackground: true}, func(b *memBlob) fetch.BlobReader {
				sb.memBlob = b
				return sb
			}, estargz.WithChunkSize(16<<10))
			mnt, _ := mount(t, l)
			// O_DIRECT: one FUSE read, which the kernel does not retry
			// page by page (those retries would fetch single chunks,
			// unstreamed)
			f, err := os.OpenFile(filepath.Join(mnt, "big"), os.O_RDONLY|unix.O_DIRECT, 0)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			buf := make([]byte, 128<<10) // several chunks: one streamed span
			_, err = f.ReadAt(buf, 0)
			select {
			case <-sb.halfway:
			default:
				t.Fatalf("the read was not streamed (err %v)", err)
			}
			if !errors.Is(err, syscall.EIO) {
				t.Fatalf("read of a span that failed with %v: %v, want EIO", tc.fail, err)
			}
		})
	}
}

// TestComplete: Complete is closed once every chunk is present, whether
// the background fetch or readers fetched them, and not before.
func TestComplete(t *testing.T) {
	tarball := testtar.Synthetic(2 << 20)
	for _, tc := range []struct {
		name string
		opts fetch.Options
		read bool // read every file through the mount
	}{
		{"background", fetch.Options{BackgroundQuiet: -1}, false},
		{"readers alone", fetch.Options{NoPrefetch: true, NoBackground: true}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l, _ := layerOf(t, tarball, tc.opts, estargz.WithChunkSize(256<<10))
			mnt, _ := mount(t, l)
			select {
			case <-l.Complete():
				t.Fatal("complete before anything was fetched")
			default:
			}
			l.Start()
			if tc.read {
				err := filepath.WalkDir(mnt, func(p string, d os.DirEntry, err error) error {
					if err != nil || !d.Type().IsRegular() {
						return err
					}
					_, err = os.ReadFile(p)
					return err
				})
				if err != nil {
					t.Fatal(err)
				}
			}
			select {
			case <-l.Complete():
			case <-time.After(30 * time.Second):
				t.Fatalf("not complete: %+v", l.Stats())
			}
			if st := l.Stats(); st.ChunksPresent != st.Chunks {
				t.Fatalf("complete with %d of %d chunks present", st.ChunksPresent, st.Chunks)
			}
		})
	}
}
