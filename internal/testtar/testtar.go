// Package testtar builds tar layers with every kind of entry and compares
// what a reader presents against the source tar. It is for tests only.
package testtar

import (
	"archive/tar"
	"bytes"
	"fmt"
	"io"
	"math/rand/v2"
	"path"
	"sort"
	"strings"
	"time"
)

// Entry is one source tar entry with its content.
type Entry struct {
	Header  tar.Header
	Content []byte
}

// Clean is the entry's name as readers present it: relative, no "./" and no
// trailing slash.
func Clean(name string) string {
	c := path.Clean(strings.TrimPrefix(name, "/"))
	if c == "." {
		return ""
	}
	return c
}

// Synthetic returns a tar with directories, empty, small, multi-chunk and
// mostly-zero files, symlinks, hardlinks (and a link to a link), character and
// block devices, a fifo, xattrs, setuid/sticky bits, owners, long and deep
// names, unicode, and overlayfs whiteouts. bigSize sets the largest file.
func Synthetic(bigSize int) []byte {
	rng := rand.New(rand.NewPCG(1, 2))
	random := func(n int) []byte {
		b := make([]byte, n)
		for i := range b {
			b[i] = byte(rng.IntN(256))
		}
		return b
	}
	mt := time.Date(2024, 5, 6, 7, 8, 9, 0, time.UTC)
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	add := func(h tar.Header, content []byte) {
		if h.ModTime.IsZero() {
			h.ModTime = mt
		}
		if h.Typeflag == tar.TypeReg {
			h.Size = int64(len(content))
		}
		h.Format = tar.FormatPAX
		if err := tw.WriteHeader(&h); err != nil {
			panic(err)
		}
		if _, err := tw.Write(content); err != nil {
			panic(err)
		}
	}
	dir := func(name string, mode int64) { add(tar.Header{Typeflag: tar.TypeDir, Name: name, Mode: mode}, nil) }
	reg := func(name string, mode int64, content []byte) {
		add(tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: mode, Uid: 1000, Gid: 1000, Uname: "user", Gname: "group"}, content)
	}
	dir("./", 0o755)
	dir("etc/", 0o755)
	reg("etc/hostname", 0o644, []byte("lazysnap\n"))
	reg("etc/empty", 0o600, nil)
	reg("etc/setuid", 0o4755, []byte("#!/bin/sh\necho hi\n"))
	dir("tmp/", 0o1777)
	dir("usr/", 0o755)
	dir("usr/bin/", 0o755)
	reg("usr/bin/tool", 0o755, random(100_000))
	add(tar.Header{Typeflag: tar.TypeLink, Name: "usr/bin/tool-link", Linkname: "usr/bin/tool"}, nil)
	add(tar.Header{Typeflag: tar.TypeLink, Name: "usr/bin/tool-link2", Linkname: "usr/bin/tool-link"}, nil)
	add(tar.Header{Typeflag: tar.TypeSymlink, Name: "usr/bin/sym", Linkname: "tool", Mode: 0o777}, nil)
	add(tar.Header{Typeflag: tar.TypeSymlink, Name: "usr/bin/abs-sym", Linkname: "/etc/hostname", Mode: 0o777}, nil)
	reg("big", 0o644, random(bigSize))
	zeros := make([]byte, 3<<20)
	copy(zeros[1<<20:], "island in the zeros")
	reg("mostly-zero", 0o644, zeros)
	dir("dev/", 0o755)
	add(tar.Header{Typeflag: tar.TypeChar, Name: "dev/null", Mode: 0o666, Devmajor: 1, Devminor: 3}, nil)
	add(tar.Header{Typeflag: tar.TypeBlock, Name: "dev/loop0", Mode: 0o660, Devmajor: 7, Devminor: 0}, nil)
	add(tar.Header{Typeflag: tar.TypeFifo, Name: "dev/fifo", Mode: 0o644}, nil)
	dir("x/", 0o755)
	add(tar.Header{Typeflag: tar.TypeReg, Name: "x/with-xattrs", Mode: 0o644, PAXRecords: map[string]string{
		"SCHILY.xattr.user.comment": "hello",
		// a valid VFS_CAP_REVISION_2 value granting cap_net_bind_service
		"SCHILY.xattr.security.capability": "\x01\x00\x00\x02\x00\x04\x00\x00" + strings.Repeat("\x00", 12),
	}}, []byte("xattrs"))
	deep := "deep"
	for i := 0; i < 30; i++ {
		deep += fmt.Sprintf("/level-%02d", i)
	}
	dir(deep+"/", 0o755) // parents implied, not listed
	long := deep + "/" + strings.Repeat("long-name-", 25)
	reg(long, 0o644, []byte("long"))
	reg("unicode-ファイル-ü", 0o644, []byte("unicode"))
	reg("x/.wh.deleted", 0o644, nil)
	dir("opaque/", 0o755)
	reg("opaque/.wh..wh..opq", 0o644, nil)
	reg("opaque/kept", 0o644, []byte("kept"))
	for i := 0; i < 200; i++ {
		reg(fmt.Sprintf("many/file-%03d", i), 0o644, random(rng.IntN(3000)))
	}
	if err := tw.Close(); err != nil {
		panic(err)
	}
	return buf.Bytes()
}

// Read returns the entries of a tar by clean name; later entries replace
// earlier ones as tar extraction does.
func Read(tarball []byte) (map[string]*Entry, error) {
	out := map[string]*Entry{}
	tr := tar.NewReader(bytes.NewReader(tarball))
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return out, nil
		}
		if err != nil {
			return nil, err
		}
		b, err := io.ReadAll(tr)
		if err != nil {
			return nil, err
		}
		out[Clean(h.Name)] = &Entry{Header: *h, Content: b}
	}
}

// Names returns the map's keys sorted.
func Names(m map[string]*Entry) []string {
	var s []string
	for k := range m {
		s = append(s, k)
	}
	sort.Strings(s)
	return s
}

// Xattrs returns the SCHILY.xattr records of h.
func Xattrs(h *tar.Header) map[string]string {
	x := map[string]string{}
	for k, v := range h.PAXRecords {
		if n, ok := strings.CutPrefix(k, "SCHILY.xattr."); ok {
			x[n] = v
		}
	}
	return x
}

// Files builds a tar of regular files (name → content), mode 0755.
func Files(files [][2]string) []byte {
	var b bytes.Buffer
	tw := tar.NewWriter(&b)
	for _, f := range files {
		tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: f[0], Mode: 0o755, Size: int64(len(f[1]))})
		tw.Write([]byte(f[1]))
	}
	tw.Close()
	return b.Bytes()
}
