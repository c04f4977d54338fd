package fs

import (
	"context"
	"errors"
	"fmt"
	"syscall"
	"testing"

	"github.com/lazysnap/lazysnap/estargz"
	"github.com/lazysnap/lazysnap/fs/fetch"
)

func TestErrno(t *testing.T) {
	for _, tc := range []struct {
		name string
		err  error
		want syscall.Errno
	}{
		{"nil", nil, 0},
		{"cancelled read", fmt.Errorf("waiting: %w", &fetch.Interrupted{Err: context.Canceled}), syscall.EINTR},
		{"cancelled elsewhere", fmt.Errorf("waiting: %w", context.Canceled), syscall.EIO},
		{"timeout", context.DeadlineExceeded, syscall.EIO},
		{"registry failure", errors.New("connection refused"), syscall.EIO},
		{"verification", fmt.Errorf("chunk: %w", estargz.ErrVerify), syscall.EIO},
		{"errno passes through", fmt.Errorf("x: %w", syscall.ENOENT), syscall.ENOENT},
		{"socket errno of a fetch", &fetch.BlobError{Err: fmt.Errorf("read: %w", syscall.ECONNRESET)}, syscall.EIO},
		{"refused fetch", fmt.Errorf("wait: %w", &fetch.BlobError{Err: fmt.Errorf("dial: %w", syscall.ECONNREFUSED)}), syscall.EIO},
		{"cancelled fetch", &fetch.BlobError{Err: fmt.Errorf("x: %w", context.Canceled)}, syscall.EIO},
		{"unmarked socket errno", fmt.Errorf("stream: %w", syscall.ECONNRESET), syscall.EIO},
		{"unmarked broken pipe", fmt.Errorf("stream: %w", syscall.EPIPE), syscall.EIO},
		{"unmarked timeout errno", fmt.Errorf("stream: %w", syscall.ETIMEDOUT), syscall.EIO},
		{"cache disk full", fmt.Errorf("store: %w", syscall.ENOSPC), syscall.EIO},
		{"ENODATA passes through", fmt.Errorf("x: %w", syscall.ENODATA), syscall.ENODATA},
		{"ENOENT of a fetch", &fetch.BlobError{Err: fmt.Errorf("x: %w", syscall.ENOENT)}, syscall.EIO},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := Errno(tc.err); got != tc.want {
				t.Fatalf("Errno(%v) = %v, want %v", tc.err, got, tc.want)
			}
		})
	}
}
