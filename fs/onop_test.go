package fs_test

import (
	"errors"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"

	lfs "github.com/lazysnap/lazysnap/fs"
	"github.com/lazysnap/lazysnap/fs/fetch"
	"github.com/lazysnap/lazysnap/internal/testtar"
)

// TestOnOp: every FUSE request a mount handles is reported once, by
// operation name, with the errno it was answered: an attribute the file
// lacks is ENODATA, a read of a file whose chunks cannot be fetched EIO, a
// read served 0.
func TestOnOp(t *testing.T) {
	type key struct {
		op    string
		errno syscall.Errno
	}
	var mu sync.Mutex
	seen := map[key]int{}
	var negative bool
	opts := fetch.Options{NoPrefetch: true, NoBackground: true, ReadAround: -1, OnOp: func(op string, took time.Duration, errno syscall.Errno) {
		mu.Lock()
		defer mu.Unlock()
		seen[key{op, errno}]++
		negative = negative || took < 0
	}}
	l, blob := layerOf(t, testtar.Files([][2]string{{"etc/hostname", "layer\n"}, {"usr/bin/tool", "a tool"}}), opts)
	dir, _ := mount(t, l)
	count := func(op string, errno syscall.Errno) int {
		mu.Lock()
		defer mu.Unlock()
		return seen[key{op, errno}]
	}
	cases := []struct {
		name  string
		do    func() error
		op    string
		errno syscall.Errno
	}{
		{"read", func() error { _, err := os.ReadFile(filepath.Join(dir, "etc/hostname")); return err }, "read", 0},
		{"missing xattr", func() error {
			_, err := syscall.Getxattr(filepath.Join(dir, "etc/hostname"), "user.nope", make([]byte, 64))
			return ignore(err, syscall.ENODATA)
		}, "getxattr", syscall.ENODATA},
		{"registry down", func() error {
			blob.set(func(b *memBlob) { b.fail = errors.New("connection refused") })
			defer blob.set(func(b *memBlob) { b.fail = nil })
			_, err := os.ReadFile(filepath.Join(dir, "usr/bin/tool"))
			return ignore(err, syscall.EIO)
		}, "read", syscall.EIO},
		{"listing", func() error { _, err := os.ReadDir(dir); return err }, "readdirplus", 0},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			before := count(c.op, c.errno)
			if err := c.do(); err != nil {
				t.Fatal(err)
			}
			if count(c.op, c.errno) <= before {
				mu.Lock()
				defer mu.Unlock()
				t.Fatalf("no %s answered %v reported; reported: %v", c.op, c.errno, seen)
			}
		})
	}
	if negative {
		t.Fatal("a negative duration was reported")
	}
	if lfs.OpName(15) != "read" || lfs.OpName(4) != "other" {
		t.Fatalf("OpName(15) %q, OpName(4) %q", lfs.OpName(15), lfs.OpName(4))
	}
}

// ignore returns nil for an error that is want, and a reminder otherwise.
func ignore(err, want error) error {
	if errors.Is(err, want) {
		return nil
	}
	return errors.Join(errors.New("want "+want.Error()), err)
}
