package soci

import (
	"archive/tar"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"

	"github.com/lazysnap/lazysnap/layer"
	"github.com/lazysnap/lazysnap/zran"
	"github.com/opencontainers/go-digest"
)

// DefaultSpanSize is the uncompressed span size lazysnap indexes with by
// default: 1 MiB, a quarter of soci-snapshotter's 4 MiB. A span is what
// one read of a file fetches, verifies and inflates whole (its digest
// covers all its compressed bytes), while each span adds a 32 KiB window
// to the zTOC fetched at mount. On the benchmark's Python image (81.7 MB
// gzip), 1 MiB spans took `python3 -c 'print("hello")'` from 6.4 s to
// 3.35 s (20 ms RTT, 100 Mbit/s): a 6.6 MB zTOC instead of 2.8 MB, and
// 14 MB of spans instead of 30 MB; half as large again, the windows
// cost what the smaller spans save.
const DefaultSpanSize = 1 << 20

// BuildOptions configures Build.
type BuildOptions struct {
	// SpanSize is the uncompressed bytes between checkpoints
	// (DefaultSpanSize).
	SpanSize int64
	// BuildTool is recorded in the zTOC ("lazysnap").
	BuildTool string
	// Tee, if set, receives the whole uncompressed stream, in order, as
	// it is inflated: the tar and whatever follows it (padding, later
	// gzip members). An entry the zTOC cannot describe does not cut it
	// short: the stream is still read to its end before Build returns
	// the error. A write error of Tee ends Build with that error.
	Tee io.Writer
}

// Build reads a gzip tar layer from r once and returns its zTOC:
// checkpoints from zran's inflater, span digests from the compressed
// bytes, file metadata from the tar stream. Errors wrap ErrFormat when r
// is not a gzip tar stream (or one SOCI cannot index), and are r's
// otherwise.
func Build(r io.Reader, opts BuildOptions) (*Ztoc, error) {
	if opts.SpanSize <= 0 {
		opts.SpanSize = DefaultSpanSize
	}
	if opts.BuildTool == "" {
		opts.BuildTool = "lazysnap"
	}
	sp := &spanHasher{}
	tee := io.TeeReader(r, sp)
	ix, err := zran.NewIndexer(tee, opts.SpanSize)
	if err != nil {
		return nil, buildErr(err)
	}
	pr := &progress{ix: ix, sp: sp, span: opts.SpanSize, tee: opts.Tee}
	// fail ends Build with err once the stream (for Tee) is read through
	fail := func(err error) (*Ztoc, error) {
		if opts.Tee != nil && pr.teeErr == nil {
			if _, rerr := io.Copy(io.Discard, pr); rerr != nil {
				err = rerr
			}
		}
		if pr.teeErr != nil {
			return nil, pr.teeErr
		}
		return nil, buildErr(err)
	}
	z := &Ztoc{Version: Version, BuildTool: opts.BuildTool, Algorithm: AlgorithmGzip}
	tr := tar.NewReader(pr)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return fail(err)
		}
		f := File{Name: h.Name, Offset: pr.n, Size: h.Size, Linkname: h.Linkname, Mode: h.Mode,
			UID: uint32(h.Uid), GID: uint32(h.Gid), Uname: h.Uname, Gname: h.Gname, ModTime: h.ModTime,
			DevMajor: h.Devmajor, DevMinor: h.Devminor, PAX: h.PAXRecords}
		switch h.Typeflag {
		case tar.TypeReg:
			f.Type = layer.TypeReg
		case tar.TypeDir:
			f.Type = layer.TypeDir
		case tar.TypeSymlink:
			f.Type = layer.TypeSymlink
		case tar.TypeLink:
			f.Type = layer.TypeHardlink
		case tar.TypeChar:
			f.Type = layer.TypeChar
		case tar.TypeBlock:
			f.Type = layer.TypeBlock
		case tar.TypeFifo:
			f.Type = layer.TypeFifo
		default:
			return fail(fmt.Errorf("%w: tar entry %q of type %q", ErrUnsupported, h.Name, h.Typeflag))
		}
		z.Files = append(z.Files, f)
	}
	z.UncompressedSize = pr.n
	// the rest of the stream (tar padding, gzip trailer, later members)
	if _, err := io.Copy(io.Discard, pr); err != nil {
		return fail(err)
	}
	z.CompressedSize = ix.CompressedSize()
	cps := ix.Checkpoints()
	pr.hashUpTo(cps)
	sp.close(z.CompressedSize)
	z.SpanDigests = sp.digs
	z.Checkpoints = Checkpoints{SpanSize: opts.SpanSize, List: make([]Checkpoint, len(cps))}
	for i, c := range cps {
		z.Checkpoints.List[i] = Checkpoint{In: c.In, Bits: c.Bits, Out: c.Out, Window: c.Window}
	}
	if err := z.Validate(); err != nil {
		return nil, err
	}
	return z, nil
}

func buildErr(err error) error {
	if errors.Is(err, zran.ErrFormat) || errors.Is(err, zran.ErrChecksum) || errors.Is(err, tar.ErrHeader) ||
		errors.Is(err, io.ErrUnexpectedEOF) {
		return fmt.Errorf("%w: %w", ErrFormat, err)
	}
	return err
}

// progress reads the uncompressed stream, counting it, and hashes each
// span's compressed bytes once the checkpoint after it is known.
type progress struct {
	ix     *zran.Indexer
	sp     *spanHasher
	span   int64
	n      int64 // uncompressed bytes read
	seen   int   // checkpoints hashed up to
	lastCP int64 // Out of the last checkpoint seen
	tee    io.Writer
	teeErr error // tee's failure, which ends the stream
}

func (p *progress) Read(b []byte) (int, error) {
	if p.teeErr != nil {
		return 0, p.teeErr
	}
	n, err := p.ix.Read(b)
	p.n += int64(n)
	if p.tee != nil && n > 0 {
		if _, werr := p.tee.Write(b[:n]); werr != nil {
			p.teeErr = werr
			return n, werr
		}
	}
	// a checkpoint can only have been added after more than span bytes
	if p.seen == 0 || p.n-p.lastCP > p.span {
		p.hashUpTo(p.ix.Checkpoints())
	}
	return n, err
}

// hashUpTo closes the spans that end at checkpoints not seen yet.
func (p *progress) hashUpTo(cps []zran.Checkpoint) {
	for ; p.seen < len(cps); p.seen++ {
		c := cps[p.seen]
		start := c.In
		if c.Bits != 0 {
			start--
		}
		if p.seen > 0 {
			p.sp.close(c.In)
		}
		p.sp.open(start)
		p.lastCP = c.Out
	}
}

// spanHasher receives the compressed stream and keeps the bytes of the
// open span; close hashes it.
type spanHasher struct {
	base  int64  // blob offset of buf[0]
	buf   []byte // bytes from base on
	start int64  // the open span's start (-1: none)
	digs  []digest.Digest
}

func (s *spanHasher) Write(b []byte) (int, error) {
	s.buf = append(s.buf, b...)
	return len(b), nil
}

// open starts a span at blob offset start, dropping what lies before it.
func (s *spanHasher) open(start int64) {
	s.start = start
	if d := start - s.base; d > 0 {
		n := copy(s.buf, s.buf[d:])
		s.buf = s.buf[:n]
		s.base = start
	}
}

// close hashes the open span up to blob offset end.
func (s *spanHasher) close(end int64) {
	sum := sha256.Sum256(s.buf[s.start-s.base : end-s.base])
	s.digs = append(s.digs, digest.NewDigestFromBytes(digest.SHA256, sum[:]))
}
