package remote

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/lazysnap/lazysnap/fetcher"
	"github.com/lazysnap/lazysnap/fs/fetch"
	"github.com/lazysnap/lazysnap/internal/testenv"
	"github.com/lazysnap/lazysnap/internal/testtar"
	"github.com/lazysnap/lazysnap/snapshotter"
	"github.com/lazysnap/lazysnap/soci"
	"golang.org/x/sys/unix"
)

func zfile(z *soci.Ztoc, name string) *soci.File {
	for i := range z.Files {
		if z.Files[i].Name == name {
			return &z.Files[i]
		}
	}
	panic("no " + name)
}

// TestSociHostileZtoc: a zTOC crafted over a real gzip layer, forging what
// the span digests do not cover, never has its forgery served. A file
// whose mode, owner, xattrs, link target or device numbers the zTOC
// forges fails (EIO) where it would be used: its open, readlink,
// getxattr/listxattr, the lookup of a device; the reason names the field
// and is the layer's last error, and the index is marked bad, so that a
// new Mount of it is refused. A forged checkpoint window is found once
// the layer is complete (its bytes were served: nothing on the read path
// can tell), and marks the index bad likewise. A hardlink to a directory
// is refused at Mount. The honest zTOC serves every one of those.
func TestSociHostileZtoc(t *testing.T) {
	testenv.NeedFUSE(t)
	r, hosts := startRegistry(t)
	f, err := fetcher.New(fetcher.Config{HostsDir: hosts})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	ctx := context.Background()
	blob := testtar.HostileLayer()
	eio := func(err error) bool { return errors.Is(err, syscall.EIO) }
	getxattr := func(p, name string) error {
		_, err := unix.Getxattr(p, name, make([]byte, 256))
		return err
	}
	listxattr := func(p string) error {
		_, err := unix.Listxattr(p, make([]byte, 256))
		return err
	}

	for _, tc := range []struct {
		name   string
		tamper func(z *soci.Ztoc)
		// use must fail with EIO (forged) or succeed (honest)
		use    func(mp string) error
		reason string // "" when honest
		// stat names the forged inode: once refused, not even its
		// attributes are served (the kernel's are dropped)
		stat string
	}{
		{name: "honest", use: func(mp string) error {
			if _, err := os.ReadFile(filepath.Join(mp, "bin/tool")); err != nil {
				return err
			}
			if l, err := os.Readlink(filepath.Join(mp, "etc/link")); err != nil || l != "passwd" {
				return errors.Join(err, errors.New("link "+l))
			}
			if b, err := os.ReadFile(filepath.Join(mp, "etc/hard")); err != nil || string(b) != "other\n" {
				return errors.Join(err, errors.New("etc/hard: "+string(b)))
			}
			if err := getxattr(filepath.Join(mp, "bin/noted"), "user.note"); err != nil {
				return err
			}
			if err := getxattr(filepath.Join(mp, "bin/capped"), "security.capability"); !errors.Is(err, unix.ENODATA) {
				return errors.Join(err, errors.New("security.capability"))
			}
			var st syscall.Stat_t
			if err := syscall.Lstat(filepath.Join(mp, "dev/null"), &st); err != nil || st.Rdev != uint64(unix.Mkdev(1, 3)) {
				return errors.Join(err, errors.New("dev/null"))
			}
			_, err := os.ReadDir(filepath.Join(mp, "etc"))
			return err
		}},
		{name: "setuid mode", tamper: func(z *soci.Ztoc) { zfile(z, "bin/tool").Mode = 0o4755 },
			use:    func(mp string) error { _, err := os.ReadFile(filepath.Join(mp, "bin/tool")); return err },
			reason: `"bin/tool": mode 755 in the layer, the zTOC says 4755`, stat: "bin/tool"},
		{name: "owner", tamper: func(z *soci.Ztoc) { f := zfile(z, "bin/owned"); f.UID, f.GID = 1000, 1000 },
			use:    func(mp string) error { _, err := os.Open(filepath.Join(mp, "bin/owned")); return err },
			reason: `"bin/owned": owner 0:0 in the layer, the zTOC says 1000:1000`, stat: "bin/owned"},
		{name: "capability xattr", tamper: func(z *soci.Ztoc) {
			zfile(z, "bin/capped").PAX = map[string]string{"SCHILY.xattr.security.capability": "\x01\x00\x00\x02\xff\xff\xff\xff"}
		}, use: func(mp string) error {
			p := filepath.Join(mp, "bin/capped")
			if err := listxattr(p); !eio(err) {
				return errors.Join(err, errors.New("listxattr"))
			}
			return getxattr(p, "security.capability")
		}, reason: `"bin/capped": xattrs [] in the layer`, stat: "bin/capped"},
		{name: "xattr dropped", tamper: func(z *soci.Ztoc) { zfile(z, "bin/noted").PAX = nil },
			use:    func(mp string) error { return getxattr(filepath.Join(mp, "bin/noted"), "user.note") },
			reason: `"bin/noted": xattrs [user.note="kept"] in the layer, the zTOC says []`, stat: "bin/noted"},
		{name: "symlink target", tamper: func(z *soci.Ztoc) { zfile(z, "etc/link").Linkname = "/proc/1/root/etc/shadow" },
			use:    func(mp string) error { _, err := os.Readlink(filepath.Join(mp, "etc/link")); return err },
			reason: `"etc/link": a symlink to "passwd" in the layer, the zTOC says "/proc/1/root/etc/shadow"`, stat: "etc/link"},
		{name: "hardlink target", tamper: func(z *soci.Ztoc) { zfile(z, "etc/hard").Linkname = "etc/passwd" },
			use:    func(mp string) error { _, err := os.ReadFile(filepath.Join(mp, "etc/hard")); return err },
			reason: `"etc/hard" is a hardlink to "bin/other", the zTOC links it elsewhere`, stat: "etc/hard"},
		{name: "device numbers", tamper: func(z *soci.Ztoc) { zfile(z, "dev/null").DevMinor = 1 },
			use:    func(mp string) error { _, err := os.Lstat(filepath.Join(mp, "dev/null")); return err },
			reason: `"dev/null": device 1:3 in the layer`, stat: "dev/null"},
		{name: "modification time", tamper: func(z *soci.Ztoc) { zfile(z, "bin/other").ModTime = time.Unix(1, 0) },
			use:    func(mp string) error { _, err := os.Open(filepath.Join(mp, "bin/other")); return err },
			reason: `"bin/other": modified at 1700000000 in the layer, the zTOC says 1`, stat: "bin/other"},
		{name: "whiteout over a file", tamper: func(z *soci.Ztoc) { zfile(z, "etc/passwd").Name = "etc/.wh.passwd" },
			use:    func(mp string) error { _, err := os.Lstat(filepath.Join(mp, "etc/passwd")); return err },
			reason: `name "etc/passwd", the zTOC says "etc/.wh.passwd"`, stat: "etc/passwd"},
		{name: "opaque mark", tamper: func(z *soci.Ztoc) { zfile(z, "bin/owned").Name = "bin/.wh..wh..opq" },
			use:    func(mp string) error { return getxattr(filepath.Join(mp, "bin"), "trusted.overlay.opaque") },
			reason: `name "bin/owned", the zTOC says "bin/.wh..wh..opq"`, stat: "bin"},
		{name: "entry omitted", tamper: func(z *soci.Ztoc) {
			i := slices.IndexFunc(z.Files, func(f soci.File) bool { return f.Name == "bin/capped" })
			z.Files = slices.Delete(z.Files, i, i+1)
		}, use: func(mp string) error { _, err := os.Open(filepath.Join(mp, "bin/noted")); return err },
			reason: `the layer has an entry "bin/capped"`, stat: "bin/noted"},
		// a listing is the index's names, which no header vouches for: it
		// is served unchecked (fs's OpenDir), the directory's xattrs are not
		{name: "directory mode", tamper: func(z *soci.Ztoc) { zfile(z, "etc/").Mode = 0o777 },
			use: func(mp string) error {
				if _, err := os.ReadDir(filepath.Join(mp, "etc")); err != nil {
					return errors.Join(err, errors.New("a listing is not checked"))
				}
				return listxattr(filepath.Join(mp, "etc"))
			},
			reason: `"etc/": mode 755 in the layer, the zTOC says 777`, stat: "etc"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			repo := "hostile/" + strings.ReplaceAll(tc.name, " ", "-")
			img, err := r.Pusher().PushSociImage(ctx, r.Host, repo, "1", 64<<10, func(_ int, z *soci.Ztoc) {
				if tc.tamper != nil {
					tc.tamper(z)
				}
			}, blob)
			if err != nil {
				t.Fatal(err)
			}
			root := t.TempDir()
			fs := New(NewRegistrySource(f), Options{Root: root, Layer: fetch.Options{NoBackground: true}})
			mp := t.TempDir()
			if err := fs.Mount(ctx, mp, sociLabels(img.Ref, img.Layers[0].Digest)); err != nil {
				t.Fatal(err)
			}
			defer fs.Unmount(ctx, mp)
			err = tc.use(mp)
			if tc.reason == "" {
				if err != nil {
					t.Fatalf("the honest zTOC: %v", err)
				}
				if bad := fs.BadLayers(); len(bad) != 0 {
					t.Fatalf("bad layers %+v with the honest zTOC", bad)
				}
				return
			}
			if !eio(err) {
				t.Fatalf("using what the zTOC forges: %v, want EIO", err)
			}
			if _, err := os.Lstat(filepath.Join(mp, tc.stat)); !eio(err) {
				t.Fatalf("stat of %s after it was refused: %v, want EIO", tc.stat, err)
			}
			if e := fs.Layers()[0].LastError; !strings.Contains(e, tc.reason) {
				t.Fatalf("layer error %q, want it to say %q", e, tc.reason)
			}
			bad := fs.BadLayers()
			if len(bad) != 1 || bad[0].Index == "" || !strings.Contains(bad[0].Reason, tc.reason) {
				t.Fatalf("bad layers %+v, want the index marked with the reason", bad)
			}
			// a new Mount of the index is refused: the snapshotter pulls
			// the layer the ordinary way
			err = fs.Mount(ctx, t.TempDir(), sociLabels(img.Ref, img.Layers[0].Digest))
			if !errors.Is(err, snapshotter.ReasonVerification) {
				t.Fatalf("Mount of the bad index: %v, want refused (verification)", err)
			}
		})
	}

	t.Run("hardlinked directory", func(t *testing.T) {
		img, err := r.Pusher().PushSociImage(ctx, r.Host, "hostile/dirlink", "1", 64<<10, func(_ int, z *soci.Ztoc) {
			zfile(z, "etc/hard").Linkname = "bin/"
		}, blob)
		if err != nil {
			t.Fatal(err)
		}
		err = New(NewRegistrySource(f), Options{Root: t.TempDir()}).Mount(ctx, t.TempDir(), sociLabels(img.Ref, img.Layers[0].Digest))
		if !errors.Is(err, snapshotter.ReasonNotLazy) || !strings.Contains(err.Error(), "to directory") {
			t.Fatalf("Mount with a hardlink to a directory: %v, want refused", err)
		}
	})

	t.Run("forged window", func(t *testing.T) {
		var forged int
		img, err := r.Pusher().PushSociImage(ctx, r.Host, "hostile/window", "1", 64<<10, func(_ int, z *soci.Ztoc) {
			// a span in the middle of the text file, whose deflate
			// back-references reach into its window
			text := zfile(z, "usr/share/text")
			forged = z.SpanAt(text.Offset + text.Size/2)
			w := z.Checkpoints.List[forged].Window
			for i := range w {
				w[i] = 'X'
			}
		}, blob)
		if err != nil {
			t.Fatal(err)
		}
		fs := New(NewRegistrySource(f), Options{Root: t.TempDir(), VerifyBlob: true})
		mp := t.TempDir()
		if err := fs.Mount(ctx, mp, sociLabels(img.Ref, img.Layers[0].Digest)); err != nil {
			t.Fatal(err)
		}
		defer fs.Unmount(ctx, mp)
		// the background fetch completes the layer; its check finds the
		// window
		var state string
		for deadline := time.Now().Add(60 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
			if state = fs.Layers()[0].Verification; isBad(state) || state == VerifyVerified {
				break
			}
		}
		if !isBad(state) || !strings.Contains(state, "window differs") {
			t.Fatalf("verification %q, want bad for the forged window of span %d", state, forged)
		}
		if err := fs.Mount(ctx, t.TempDir(), sociLabels(img.Ref, img.Layers[0].Digest)); !errors.Is(err, snapshotter.ReasonVerification) {
			t.Fatalf("Mount of the bad index: %v, want refused (verification)", err)
		}
	})
}
