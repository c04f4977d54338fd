package unpack

import (
	"bufio"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"hash"
	"io"
	"sync/atomic"

	"github.com/containerd/containerd/v2/pkg/archive"
	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"
	"github.com/lazysnap/lazysnap/soci"
	"github.com/lazysnap/lazysnap/zran"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// Docker's layer media types, which are OCI's by other names.
const (
	dockerGzip = "application/vnd.docker.image.rootfs.diff.tar.gzip"
	dockerTar  = "application/vnd.docker.image.rootfs.diff.tar"
)

// Options configures Unpack.
type Options struct {
	// Parents are the directories of the layers below, nearest first: a
	// directory the layer implies takes its attributes from them
	// (archive.WithParents), as when containerd applies a layer.
	Parents []string
	// Index builds the SOCI zTOC of a gzip layer on the way.
	Index bool
	// SpanSize is the zTOC's span (soci.DefaultSpanSize).
	SpanSize int64
	// Fetched, if set, counts the compressed bytes received so far.
	Fetched *atomic.Int64
	// Blob, if set, receives the compressed blob as it arrives (a copy
	// kept elsewhere: containerd's content store). Its failure does not
	// fail the unpack: it is no longer written to, and Result.BlobErr
	// says why.
	Blob io.Writer
}

// Result is what Unpack learnt of the layer.
type Result struct {
	// DiffID is the digest of the uncompressed tar stream.
	DiffID digest.Digest
	// Uncompressed is its size.
	Uncompressed int64
	// Ztoc is the layer's zTOC (Options.Index, gzip layers); nil with
	// IndexErr saying why when it could not be built.
	Ztoc     *soci.Ztoc
	IndexErr error
	// BlobErr is Options.Blob's failure, nil if none.
	BlobErr error
}

// Unpack applies the layer desc to dir: fetch writes the blob, in order,
// to the writer it is given, and the files are written while it does. The
// blob is checked against desc's digest and size before Unpack returns
// nil; on error dir holds part of the layer and must be discarded.
func Unpack(ctx context.Context, dir string, desc ocispec.Descriptor, fetch func(ctx context.Context, w io.Writer) error, opts Options) (Result, error) {
	gz := false
	switch desc.MediaType {
	case ocispec.MediaTypeImageLayerGzip, dockerGzip:
		gz = true
	case ocispec.MediaTypeImageLayerZstd, ocispec.MediaTypeImageLayer, dockerTar:
	default:
		return Result{}, fmt.Errorf("%w: %s", ErrUnsupported, desc.MediaType)
	}
	if err := desc.Digest.Validate(); err != nil {
		return Result{}, fmt.Errorf("%w: layer digest %q: %w", ErrUnsupported, desc.Digest, err)
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()

	// fetch -> pr1 -> decompressor -> pr2 -> applier
	pr1, pw1 := io.Pipe()
	pr2, pw2 := io.Pipe()
	blobHash := desc.Digest.Algorithm().Hash()
	var fetched int64
	var side *sideWriter
	if opts.Blob != nil {
		side = &sideWriter{w: opts.Blob}
	}
	fetchDone := make(chan error, 1)
	go func() {
		var sink io.Writer = pw1
		if side != nil {
			sink = io.MultiWriter(side, pw1)
		}
		w := &hashCounter{h: blobHash, n: &fetched, also: opts.Fetched, w: sink}
		err := fetch(ctx, w)
		if err != nil {
			pw1.CloseWithError(&fetchError{err})
		} else {
			pw1.Close()
		}
		fetchDone <- err
	}()
	applyDone := make(chan error, 1)
	go func() {
		aopts := []archive.ApplyOpt{archive.WithConvertWhiteout(archive.OverlayConvertWhiteout)}
		if len(opts.Parents) > 0 {
			aopts = append(aopts, archive.WithParents(opts.Parents))
		}
		// read through a buffer: the tar reader's reads are of 512 bytes
		// and a file's size, and each read of a pipe is a hand-over
		// between goroutines (a layer of 100,000 small files spent more
		// CPU on those than on writing its files)
		br := bufio.NewReaderSize(pr2, 1<<20)
		_, err := archive.Apply(ctx, dir, br, aopts...)
		if err == nil {
			// what follows the tar's end (padding) is the diff ID's too
			_, err = io.Copy(io.Discard, br)
		}
		if err != nil {
			pr2.CloseWithError(&applyError{err})
		} else {
			pr2.Close()
		}
		applyDone <- err
	}()

	src := &eofReader{r: pr1}
	diffHash := sha256.New()
	var uncompressed int64
	// written through a buffer: the inflaters write what the tar reader
	// of soci.Build reads, a few hundred bytes at a time, and each write
	// to a pipe is a hand-over between goroutines
	bw := bufio.NewWriterSize(pw2, 256<<10)
	out := &hashCounter{h: diffHash, n: &uncompressed, w: bw}
	res := Result{}
	var derr error
	switch {
	case gz && opts.Index:
		var z *soci.Ztoc
		z, derr = soci.Build(src, soci.BuildOptions{SpanSize: opts.SpanSize, Tee: out})
		if derr == nil {
			res.Ztoc = z
		} else if src.eof && !streamBroken(derr) {
			// the stream went through whole: only the index failed
			res.IndexErr, derr = derr, nil
		}
	case gz:
		derr = inflate(src, out, func(r io.Reader) (io.Reader, func(), error) {
			zr, err := gzip.NewReader(r)
			return zr, func() {}, err
		})
	case desc.MediaType == ocispec.MediaTypeImageLayerZstd:
		derr = inflate(src, out, func(r io.Reader) (io.Reader, func(), error) {
			zr, err := zstd.NewReader(r)
			if err != nil {
				return nil, nil, err
			}
			return zr, zr.Close, nil
		})
	default:
		_, derr = io.Copy(out, src)
	}
	if derr == nil {
		derr = bw.Flush()
	}
	if derr != nil {
		pw2.CloseWithError(derr)
	} else {
		pw2.Close()
	}
	pr1.CloseWithError(errStopped) // a fetch still writing ends
	aerr := <-applyDone
	ferr := <-fetchDone
	if side != nil {
		res.BlobErr = side.err
	}

	var ae *applyError
	switch {
	case ctx.Err() != nil:
		return res, ctx.Err()
	case ferr != nil && !errors.Is(ferr, errStopped):
		return res, fmt.Errorf("%w: %w", ErrFetch, ferr)
	case errors.As(derr, &ae) || (derr == nil && aerr != nil):
		return res, fmt.Errorf("%w: %w", ErrApply, aerr)
	case derr != nil:
		return res, fmt.Errorf("%w: layer %s does not inflate: %w", ErrCorrupt, desc.Digest, derr)
	}
	if desc.Size > 0 && fetched != desc.Size {
		return res, fmt.Errorf("%w: blob %s is %d bytes, its descriptor says %d", ErrDigest, desc.Digest, fetched, desc.Size)
	}
	if got := digest.NewDigest(desc.Digest.Algorithm(), blobHash); got != desc.Digest {
		return res, fmt.Errorf("%w: the registry sent a blob of digest %s for %s", ErrDigest, got, desc.Digest)
	}
	res.DiffID = digest.NewDigest(digest.SHA256, diffHash)
	res.Uncompressed = uncompressed
	return res, nil
}

// inflate copies what open's decompressor makes of r to w.
func inflate(r io.Reader, w io.Writer, open func(io.Reader) (io.Reader, func(), error)) error {
	zr, done, err := open(r)
	if err != nil {
		return err
	}
	defer done()
	_, err = io.Copy(w, zr)
	return err
}

// streamBroken reports whether soci.Build's error ended the uncompressed
// stream (corrupt compressed bytes, a failed fetch or apply) rather than
// only the zTOC (an entry it cannot describe).
func streamBroken(err error) bool {
	var (
		ae *applyError
		fe *fetchError
	)
	return errors.Is(err, zran.ErrFormat) || errors.Is(err, zran.ErrChecksum) || errors.Is(err, io.ErrUnexpectedEOF) ||
		errors.As(err, &ae) || errors.As(err, &fe) || errors.Is(err, errStopped)
}

// sideWriter passes writes on until its writer fails, and then keeps the
// error and takes every write without passing it on.
type sideWriter struct {
	w   io.Writer
	err error
}

func (s *sideWriter) Write(p []byte) (int, error) {
	if s.err == nil {
		if _, err := s.w.Write(p); err != nil {
			s.err = err
		}
	}
	return len(p), nil
}

// errStopped ends a fetch whose bytes are no longer read.
var errStopped = errors.New("unpack: stopped")

// fetchError and applyError mark which stage broke the pipes.
type fetchError struct{ err error }

func (e *fetchError) Error() string { return e.err.Error() }
func (e *fetchError) Unwrap() error { return e.err }

type applyError struct{ err error }

func (e *applyError) Error() string { return e.err.Error() }
func (e *applyError) Unwrap() error { return e.err }

// hashCounter writes to w, hashing and counting what w took.
type hashCounter struct {
	h    hash.Hash
	n    *int64
	also *atomic.Int64
	w    io.Writer
}

func (c *hashCounter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.h.Write(p[:n])
	*c.n += int64(n)
	if c.also != nil {
		c.also.Add(int64(n))
	}
	return n, err
}

// eofReader notes whether its reader reached io.EOF.
type eofReader struct {
	r   io.Reader
	eof bool
}

func (e *eofReader) Read(p []byte) (int, error) {
	n, err := e.r.Read(p)
	if errors.Is(err, io.EOF) {
		e.eof = true
	}
	return n, err
}
