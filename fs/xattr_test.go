package fs_test

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/lazysnap/lazysnap/estargz"
	"github.com/lazysnap/lazysnap/fs/fetch"
	"github.com/lazysnap/lazysnap/index"
	"golang.org/x/sys/unix"
)

// countingVerifier is the eStargz decoder as an EntryVerifier that passes
// every inode, counting the checks.
type countingVerifier struct {
	estargz.Decoder
	n *atomic.Int64
}

func (v countingVerifier) VerifyEntry(context.Context, index.Ino, fetch.BlobReader) error {
	v.n.Add(1)
	return nil
}

// TestOverlayXattrsNotServed: a layer's own overlayfs xattrs
// (trusted.overlay.*, user.overlay.*) are never served, so that image
// content cannot steer overlayfs (a redirect, a metacopy file); the opaque
// mark of a .wh..wh..opq entry is; other xattrs are, after the entry
// check. The getxattr calls overlayfs makes on each lower inode it looks
// up (metacopy, origin) cost no entry check, and neither does asking an
// opaque name of a directory that is not opaque.
func TestOverlayXattrsNotServed(t *testing.T) {
	var tb bytes.Buffer
	tw := tar.NewWriter(&tb)
	for _, h := range []*tar.Header{
		{Name: "d/", Typeflag: tar.TypeDir, Mode: 0o755, PAXRecords: map[string]string{"SCHILY.xattr.trusted.overlay.redirect": "/etc", "SCHILY.xattr.trusted.overlay.opaque": "y"}},
		{Name: "d/f", Typeflag: tar.TypeReg, Mode: 0o644, Size: 2, PAXRecords: map[string]string{
			"SCHILY.xattr.trusted.overlay.metacopy": "", "SCHILY.xattr.user.overlay.origin": "x", "SCHILY.xattr.user.note": "kept"}},
		{Name: "o/", Typeflag: tar.TypeDir, Mode: 0o755},
		{Name: "o/.wh..wh..opq", Typeflag: tar.TypeReg, Mode: 0o644},
	} {
		h.ModTime, h.Format = time.Unix(1700000000, 0), tar.FormatPAX
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		tw.Write(make([]byte, h.Size))
	}
	tw.Close()
	var checks atomic.Int64
	l, _ := layerOf(t, tb.Bytes(), fetch.Options{Name: "xattrs", NoPrefetch: true, NoBackground: true, Decoder: countingVerifier{n: &checks}})
	mnt, _ := mount(t, l)

	buf := make([]byte, 64)
	for _, tc := range []struct {
		path, attr string
		want       string // "" for ENODATA
		checked    bool   // an entry check decided it
	}{
		{"d", "trusted.overlay.redirect", "", false},
		{"d", "trusted.overlay.opaque", "", false},
		{"d", "trusted.overlay.origin", "", false},
		{"d/f", "trusted.overlay.metacopy", "", false},
		{"d/f", "user.overlay.origin", "", false},
		{"d/f", "user.note", "kept", true},
		{"o", "trusted.overlay.opaque", "y", true},
		{"o", "user.overlay.opaque", "y", false}, // o is checked already
	} {
		t.Run(tc.path+" "+tc.attr, func(t *testing.T) {
			before := checks.Load()
			n, err := unix.Lgetxattr(filepath.Join(mnt, tc.path), tc.attr, buf)
			switch {
			case tc.want == "" && !errors.Is(err, unix.ENODATA):
				t.Errorf("got %q, %v; want ENODATA", buf[:max(n, 0)], err)
			case tc.want != "" && (err != nil || string(buf[:n]) != tc.want):
				t.Errorf("got %q, %v; want %q", buf[:max(n, 0)], err, tc.want)
			}
			if got := checks.Load() > before; got != tc.checked {
				t.Errorf("entry checked: %v, want %v", got, tc.checked)
			}
		})
	}
	n, err := unix.Llistxattr(filepath.Join(mnt, "d/f"), buf)
	if err != nil {
		t.Fatal(err)
	}
	if names := strings.Split(strings.TrimRight(string(buf[:n]), "\x00"), "\x00"); !slices.Equal(names, []string{"user.note"}) {
		t.Errorf("listxattr d/f: %q, want only user.note", names)
	}
}
