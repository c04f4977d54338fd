package record

import (
	"archive/tar"
	"compress/gzip"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"strings"

	"github.com/klauspost/compress/zstd"
	"github.com/lazysnap/lazysnap/convert"
)

const (
	whiteoutPrefix = ".wh."
	whiteoutOpaque = ".wh..wh..opq"
)

// Unpack extracts the layers of the first image in the OCI layout at
// layoutDir (read with convert.LayoutLayers) into dst (created if missing),
// bottom layer first, applying overlay whiteouts. Device nodes and FIFOs
// are skipped: a container gets its own /dev. Nothing is written outside
// dst. Layers are gzip, zstd or plain tar (eStargz is gzip), chosen by the
// media type's suffix.
func Unpack(layoutDir, dst string) error {
	layers, err := convert.LayoutLayers(layoutDir)
	if err != nil {
		return fmt.Errorf("record: %w", err)
	}
	if err := os.MkdirAll(dst, 0o755); err != nil {
		return err
	}
	root, err := os.OpenRoot(dst)
	if err != nil {
		return err
	}
	defer root.Close()
	for _, l := range layers {
		blob, err := convert.LayoutBlobPath(layoutDir, l)
		if err != nil {
			return fmt.Errorf("record: %w", err)
		}
		if err := unpackLayer(root, blob, l.MediaType); err != nil {
			return fmt.Errorf("record: layer %s: %w", l.Digest, err)
		}
	}
	return nil
}

func unpackLayer(root *os.Root, blob, mediaType string) error {
	f, err := os.Open(blob)
	if err != nil {
		return err
	}
	defer f.Close()
	var r io.Reader = f
	switch {
	case strings.HasSuffix(mediaType, "gzip"):
		zr, err := gzip.NewReader(f)
		if err != nil {
			return err
		}
		defer zr.Close()
		r = zr
	case strings.HasSuffix(mediaType, "zstd"):
		zr, err := zstd.NewReader(f)
		if err != nil {
			return err
		}
		defer zr.Close()
		r = zr
	}
	created := map[string]bool{} // names this layer made: an opaque marker keeps them
	type dirTimes struct {
		name string
		h    *tar.Header
	}
	var dirs []dirTimes
	tr := tar.NewReader(r)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return err
		}
		name, err := cleanName(h.Name)
		if err != nil {
			return err
		}
		if name == "" {
			continue
		}
		dir, base := path.Split(name)
		dir = strings.TrimSuffix(dir, "/")
		if dir == "" {
			dir = "."
		}
		if base == whiteoutOpaque {
			if err := clearDir(root, dir, created); err != nil {
				return err
			}
			continue
		}
		if strings.HasPrefix(base, whiteoutPrefix) {
			if err := root.RemoveAll(path.Join(dir, strings.TrimPrefix(base, whiteoutPrefix))); err != nil {
				return err
			}
			continue
		}
		if err := root.MkdirAll(dir, 0o755); err != nil {
			return err
		}
		if h.Typeflag != tar.TypeDir {
			if err := root.RemoveAll(name); err != nil {
				return err
			}
		}
		created[name] = true
		switch h.Typeflag {
		case tar.TypeDir:
			if fi, err := root.Lstat(name); err == nil && !fi.IsDir() {
				if err := root.Remove(name); err != nil {
					return err
				}
			}
			if err := root.Mkdir(name, 0o755); err != nil && !errors.Is(err, fs.ErrExist) {
				return err
			}
			dirs = append(dirs, dirTimes{name, h})
		case tar.TypeReg:
			w, err := root.OpenFile(name, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
			if err != nil {
				return err
			}
			_, err = io.Copy(w, tr)
			if cerr := w.Close(); err == nil {
				err = cerr
			}
			if err != nil {
				return err
			}
		case tar.TypeSymlink:
			if err := root.Symlink(h.Linkname, name); err != nil {
				return err
			}
			if err := root.Lchown(name, h.Uid, h.Gid); err != nil {
				return err
			}
			continue
		case tar.TypeLink:
			target, err := cleanName(h.Linkname)
			if err != nil {
				return err
			}
			if err := root.Link(target, name); err != nil {
				return err
			}
			continue
		default: // devices, FIFOs
			continue
		}
		if err := setMeta(root, name, h); err != nil {
			return err
		}
	}
	// directory times last: creating their children changed them
	for i := len(dirs) - 1; i >= 0; i-- {
		if err := setMeta(root, dirs[i].name, dirs[i].h); err != nil {
			return err
		}
	}
	return nil
}

func setMeta(root *os.Root, name string, h *tar.Header) error {
	if err := root.Lchown(name, h.Uid, h.Gid); err != nil {
		return err
	}
	// after chown, which clears setuid and setgid
	if err := root.Chmod(name, h.FileInfo().Mode()&(fs.ModePerm|fs.ModeSetuid|fs.ModeSetgid|fs.ModeSticky)); err != nil {
		return err
	}
	return root.Chtimes(name, h.ModTime, h.ModTime)
}

// clearDir removes what lower layers left in dir (an opaque whiteout).
func clearDir(root *os.Root, dir string, keep map[string]bool) error {
	f, err := root.Open(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	names, err := f.Readdirnames(-1)
	f.Close()
	if err != nil {
		return err
	}
	for _, n := range names {
		p := path.Join(dir, n)
		if !keep[p] {
			if err := root.RemoveAll(p); err != nil {
				return err
			}
		}
	}
	return nil
}

// cleanName turns a tar name into a clean relative name ("" for the root),
// rejecting names that leave the layer.
func cleanName(name string) (string, error) {
	c := path.Clean("/" + name)
	if strings.Contains(name, "\x00") {
		return "", fmt.Errorf("bad name %q", name)
	}
	for _, el := range strings.Split(name, "/") {
		if el == ".." {
			return "", fmt.Errorf("name %q leaves the layer", name)
		}
	}
	return strings.TrimPrefix(c, "/"), nil
}
