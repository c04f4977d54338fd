package testtar

import (
	"archive/tar"
	"bytes"
	"fmt"
	"math/rand/v2"
	"time"

	"compress/gzip"
)

// SociLayer is a gzip tar of small and large files, some incompressible,
// spanning many 64 KiB spans, with files in subdirectories whose
// directories the tar does not list; and the files' contents by name.
// The layers SOCI's tests index and mount.
func SociLayer(seed uint64) ([]byte, map[string]string) {
	r := rand.New(rand.NewPCG(seed, 7))
	files := map[string]string{}
	var list [][2]string
	add := func(name string, n int, random bool) {
		b := make([]byte, n)
		for i := range b {
			if random {
				b[i] = byte(r.Uint32())
			} else {
				b[i] = "abcdefgh\n"[r.IntN(9)]
			}
		}
		files[name] = string(b)
		list = append(list, [2]string{name, string(b)})
	}
	for i := range 60 {
		add(fmt.Sprintf("usr/lib/small%02d", i), r.IntN(4000), i%2 == 0)
	}
	add("usr/bin/big", 400<<10, true)
	add("usr/share/text", 600<<10, false)
	add("etc/empty", 0, false)
	add("etc/conf", 100, false)
	var buf bytes.Buffer
	gz := gzip.NewWriter(&buf)
	gz.Write(Files(list))
	gz.Close()
	return buf.Bytes(), files
}

// HostileLayer is a gzip tar with what a forged zTOC would change: an
// executable, files of other owners, a file with an xattr, a symlink, a
// hardlink, a device node, and a large text file whose spans inflate
// with back-references into their checkpoints' windows.
func HostileLayer() []byte {
	r := rand.New(rand.NewPCG(3, 4))
	text := func(n int) []byte {
		b := make([]byte, n)
		for i := range b {
			b[i] = "abcdefgh\n"[r.IntN(9)]
		}
		return b
	}
	var buf bytes.Buffer
	gz := gzip.NewWriter(&buf)
	tw := tar.NewWriter(gz)
	mt := time.Unix(1700000000, 0)
	add := func(h tar.Header, body []byte) {
		h.ModTime, h.Size, h.Format = mt, int64(len(body)), tar.FormatPAX
		if err := tw.WriteHeader(&h); err != nil {
			panic(err) // a header the test wrote wrong
		}
		tw.Write(body)
	}
	add(tar.Header{Typeflag: tar.TypeDir, Name: "bin/", Mode: 0o755}, nil)
	add(tar.Header{Typeflag: tar.TypeReg, Name: "bin/tool", Mode: 0o755}, text(200<<10))
	add(tar.Header{Typeflag: tar.TypeReg, Name: "bin/other", Mode: 0o644}, []byte("other\n"))
	add(tar.Header{Typeflag: tar.TypeReg, Name: "bin/capped", Mode: 0o755}, []byte("#!/bin/sh\n"))
	add(tar.Header{Typeflag: tar.TypeReg, Name: "bin/noted", Mode: 0o644,
		PAXRecords: map[string]string{"SCHILY.xattr.user.note": "kept"}}, []byte("noted\n"))
	add(tar.Header{Typeflag: tar.TypeReg, Name: "bin/owned", Mode: 0o644}, []byte("root's\n"))
	add(tar.Header{Typeflag: tar.TypeDir, Name: "etc/", Mode: 0o755}, nil)
	add(tar.Header{Typeflag: tar.TypeReg, Name: "etc/passwd", Mode: 0o644}, []byte("root:x:0:0::/root:/bin/sh\n"))
	add(tar.Header{Typeflag: tar.TypeSymlink, Name: "etc/link", Linkname: "passwd", Mode: 0o777}, nil)
	add(tar.Header{Typeflag: tar.TypeLink, Name: "etc/hard", Linkname: "bin/other", Mode: 0o644}, nil)
	add(tar.Header{Typeflag: tar.TypeDir, Name: "dev/", Mode: 0o755}, nil)
	add(tar.Header{Typeflag: tar.TypeChar, Name: "dev/null", Mode: 0o666, Devmajor: 1, Devminor: 3}, nil)
	add(tar.Header{Typeflag: tar.TypeReg, Name: "usr/share/text", Mode: 0o644}, text(600<<10))
	tw.Close()
	gz.Close()
	return buf.Bytes()
}
