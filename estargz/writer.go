package estargz

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"hash"
	"io"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/klauspost/compress/gzip"
	"github.com/lazysnap/lazysnap/layer"
	"github.com/opencontainers/go-digest"
)

const (
	// DefaultChunkSize is the largest uncompressed chunk of a file that is
	// compressed, fetched and verified as a unit.
	DefaultChunkSize = 4 << 20
	// DefaultCompressionLevel is klauspost/compress's gzip level 6: on a
	// Debian rootfs it is within a few percent of stdlib gzip level 9's
	// size at several times its speed (see BenchmarkConvert).
	DefaultCompressionLevel = 6
)

// ConvertOption configures Convert.
type ConvertOption func(*convertConfig)

type convertConfig struct {
	chunkSize   int64
	level       int
	prioritized []string
	workers     int
	comp        Compression // nil: eStargz's gzip at level
	endOffsets  bool
}

// WithChunkSize sets the chunk size (DefaultChunkSize).
func WithChunkSize(n int64) ConvertOption { return func(c *convertConfig) { c.chunkSize = n } }

// WithCompressionLevel sets the gzip level, 1 (fastest) to 9 (smallest).
func WithCompressionLevel(l int) ConvertOption { return func(c *convertConfig) { c.level = l } }

// WithPrioritizedFiles places the named files (and their parent directories
// and hardlink targets) first, in this order, followed by PrefetchLandmark.
func WithPrioritizedFiles(names []string) ConvertOption {
	return func(c *convertConfig) { c.prioritized = names }
}

// WithConcurrency sets how many gzip members are compressed at once
// (default GOMAXPROCS).
func WithConcurrency(n int) ConvertOption { return func(c *convertConfig) { c.workers = n } }

// WithCompression makes Convert write the blob with c instead of eStargz's
// gzip members, TOC member and footer (WithCompressionLevel then does
// not apply).
func WithCompression(c Compression) ConvertOption { return func(cfg *convertConfig) { cfg.comp = c } }

// WithEndOffsets records in each non-empty regular file's entry the
// compressed offset where its last member ends ("endOffset"), which
// zstd:chunked readers use; eStargz readers find it from the next entry.
func WithEndOffsets() ConvertOption { return func(c *convertConfig) { c.endOffsets = true } }

// Compression is how Convert compresses a blob: a layout of members that
// each decompress on their own, the TOC and what locates it at the end.
// eStargz's gzip is the default; zstd:chunked is another.
type Compression interface {
	// Compress appends raw, compressed as one member that decompresses on
	// its own, to dst. It is called from several goroutines at once.
	Compress(dst *bytes.Buffer, raw []byte) error
	// End returns what ends a blob whose members end at compressed offset
	// off, given the TOC JSON and the end of the uncompressed tar stream
	// (its trailer).
	End(off int64, toc, trailer []byte) (*Ending, error)
}

// Ending is the end of a blob, after its data members.
type Ending struct {
	// Raw is what it adds to the uncompressed tar stream.
	Raw []byte
	// Blob is its compressed bytes.
	Blob []byte
	// TOCDigest vouches for the TOC, and Annotations are the layer
	// annotations that vouch for and locate it.
	TOCDigest   digest.Digest
	Annotations map[string]string
}

// gzipCompression is eStargz's: gzip members, the TOC as a tar entry in
// the last member, and the footer.
type gzipCompression struct {
	level int
	pool  sync.Pool // *gzip.Writer
}

var _ Compression = (*gzipCompression)(nil)

func (g *gzipCompression) Compress(dst *bytes.Buffer, raw []byte) error {
	zw, _ := g.pool.Get().(*gzip.Writer)
	if zw == nil {
		var err error
		if zw, err = gzip.NewWriterLevel(dst, g.level); err != nil {
			return err
		}
	} else {
		zw.Reset(dst)
	}
	if _, err := zw.Write(raw); err != nil {
		return err
	}
	if err := zw.Close(); err != nil {
		return err
	}
	g.pool.Put(zw)
	return nil
}

func (g *gzipCompression) End(off int64, toc, trailer []byte) (*Ending, error) {
	var raw bytes.Buffer
	tw := tar.NewWriter(&raw)
	if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: TOCTarName, Size: int64(len(toc)), Mode: 0o644}); err != nil {
		return nil, fmt.Errorf("estargz: writing TOC: %w", err)
	}
	if _, err := tw.Write(toc); err != nil {
		return nil, fmt.Errorf("estargz: writing TOC: %w", err)
	}
	if err := tw.Flush(); err != nil {
		return nil, fmt.Errorf("estargz: writing TOC: %w", err)
	}
	raw.Write(trailer)
	var blob bytes.Buffer
	if err := g.Compress(&blob, raw.Bytes()); err != nil {
		return nil, err
	}
	blob.Write(Footer(off))
	d := digest.SHA256.FromBytes(toc)
	return &Ending{Raw: raw.Bytes(), Blob: blob.Bytes(), TOCDigest: d,
		Annotations: map[string]string{TOCJSONDigestAnnotation: d.String(), TailSizeAnnotation: strconv.Itoa(blob.Len())}}, nil
}

// Result describes a blob written by Convert.
type Result struct {
	// Digest and Size identify the compressed blob.
	Digest digest.Digest
	Size   int64
	// DiffID is the sha256 of the uncompressed tar stream.
	DiffID           digest.Digest
	UncompressedSize int64
	// TOCDigest is the value for the TOCJSONDigestAnnotation (with
	// WithCompression, what the Compression says vouches for the TOC).
	TOCDigest digest.Digest
	// Annotations are the layer annotations that locate and vouch for the
	// TOC (eStargz: the TOCJSONDigestAnnotation).
	Annotations map[string]string
	// MissingPrioritized lists prioritized names that the layer lacks.
	MissingPrioritized []string
}

// Convert reads the uncompressed tar in src and writes it to dst as an
// eStargz blob. The source may be any tar, including one unpacked from an
// eStargz blob (its TOC and landmarks are regenerated).
func Convert(ctx context.Context, dst io.Writer, src *io.SectionReader, opts ...ConvertOption) (*Result, error) {
	cfg := convertConfig{chunkSize: DefaultChunkSize, level: DefaultCompressionLevel, workers: runtime.GOMAXPROCS(0)}
	for _, o := range opts {
		o(&cfg)
	}
	if cfg.chunkSize <= 0 || cfg.comp == nil && (cfg.level < gzip.BestSpeed || cfg.level > gzip.BestCompression) || cfg.workers < 1 {
		return nil, fmt.Errorf("estargz: invalid options: chunk size %d, level %d, concurrency %d", cfg.chunkSize, cfg.level, cfg.workers)
	}
	if cfg.comp == nil {
		cfg.comp = &gzipCompression{level: cfg.level}
	}
	entries, byName, err := scanTar(src)
	if err != nil {
		return nil, err
	}
	order, missing, landmarkAt := orderEntries(entries, byName, cfg.prioritized)

	w := newWriter(ctx, dst, &cfg)
	defer w.stop()
	if landmarkAt < 0 {
		if err := w.addLandmark(NoPrefetchLandmark); err != nil {
			return nil, err
		}
	}
	for i, idx := range order {
		if i == landmarkAt {
			if err := w.addLandmark(PrefetchLandmark); err != nil {
				return nil, err
			}
		}
		if err := w.addEntry(src, &entries[idx], entries, byName); err != nil {
			return nil, err
		}
	}
	if landmarkAt == len(order) {
		if err := w.addLandmark(PrefetchLandmark); err != nil {
			return nil, err
		}
	}
	res, err := w.finish()
	if err != nil {
		return nil, err
	}
	res.MissingPrioritized = missing
	return res, nil
}

// orderEntries puts the prioritized entries first and returns the order, the
// prioritized names not found, and the position of the prefetch landmark
// (-1 when no entry is prioritized, meaning NoPrefetchLandmark goes first).
func orderEntries(entries []srcEntry, byName map[string]int, prioritized []string) (order []int, missing []string, landmarkAt int) {
	emitted := make([]bool, len(entries))
	var emit func(i int)
	emit = func(i int) {
		if emitted[i] {
			return
		}
		emitted[i] = true
		for _, d := range parentDirs(entries[i].name) {
			if j, ok := byName[d]; ok {
				emit(j)
			}
		}
		if entries[i].typeflag == tar.TypeLink {
			emit(byName[entries[i].link])
		}
		order = append(order, i)
	}
	for _, p := range prioritized {
		n, err := cleanName(p)
		i, ok := byName[n]
		if err != nil || !ok {
			missing = append(missing, p)
			continue
		}
		emit(i)
	}
	landmarkAt = -1
	if len(order) > 0 {
		landmarkAt = len(order)
	}
	for i := range entries {
		emit(i)
	}
	return order, missing, landmarkAt
}

// job is one gzip member on its way through the compression pipeline.
type job struct {
	raw, out *bytes.Buffer
	chunk    *jsonEntry // set when the member is a file chunk
	whole    bool       // the chunk is the whole file: its digest is the file's
	done     chan struct{}
	err      error
	offset   int64 // compressed offset, set by the ordered writer
	end      int64 // compressed offset of its end, likewise
}

// writer builds the uncompressed tar stream member by member, compresses
// members on cfg.workers goroutines, and writes them to dst in order.
type writer struct {
	ctx  context.Context
	cfg  *convertConfig
	dst  io.Writer
	tw   *tar.Writer
	cur  *bytes.Buffer
	free chan *bytes.Buffer

	jobs, ordered chan *job
	wg            sync.WaitGroup // workers
	writerDone    chan struct{}
	stopped       bool

	toc       []*jsonEntry
	starts    map[*jsonEntry]*job // entry → member its data starts
	lasts     map[*jsonEntry]*job // reg entry → member its data ends (WithEndOffsets)
	unames    map[int]bool
	gnames    map[int]bool
	firstChnk bool

	// owned by the ordered-writer goroutine until writerDone closes
	off      int64
	rawSize  int64
	diffID   hash.Hash
	blob     hash.Hash
	writeErr error
}

type bufferWriter struct{ w *writer }

func (b bufferWriter) Write(p []byte) (int, error) { return b.w.cur.Write(p) }

func newWriter(ctx context.Context, dst io.Writer, cfg *convertConfig) *writer {
	n := cfg.workers
	w := &writer{
		ctx: ctx, cfg: cfg, dst: dst,
		free:       make(chan *bytes.Buffer, 4*n+4),
		jobs:       make(chan *job, 2*n),
		ordered:    make(chan *job, 2*n+1),
		writerDone: make(chan struct{}),
		starts:     map[*jsonEntry]*job{},
		lasts:      map[*jsonEntry]*job{},
		unames:     map[int]bool{},
		gnames:     map[int]bool{},
		diffID:     sha256.New(),
		blob:       sha256.New(),
	}
	w.cur = w.buffer()
	w.tw = tar.NewWriter(bufferWriter{w})
	for range n {
		w.wg.Add(1)
		go w.compressLoop()
	}
	go w.writeLoop()
	return w
}

func (w *writer) buffer() *bytes.Buffer {
	select {
	case b := <-w.free:
		b.Reset()
		return b
	default:
		return new(bytes.Buffer)
	}
}

func (w *writer) recycle(b *bytes.Buffer) {
	select {
	case w.free <- b:
	default:
	}
}

func (w *writer) compressLoop() {
	defer w.wg.Done()
	for j := range w.jobs {
		j.out.Grow(j.raw.Len()/2 + 64) // typical output; it grows if needed
		j.err = w.cfg.comp.Compress(j.out, j.raw.Bytes())
		if j.chunk != nil {
			d := digest.SHA256.FromBytes(j.raw.Bytes()).String()
			j.chunk.ChunkDigest = d
			if j.whole {
				j.chunk.Digest = d
			}
		}
		close(j.done)
	}
}

func (w *writer) writeLoop() {
	defer close(w.writerDone)
	for j := range w.ordered {
		<-j.done
		if w.writeErr == nil {
			w.writeErr = j.err
		}
		if w.writeErr == nil {
			w.writeErr = w.ctx.Err()
		}
		if w.writeErr == nil {
			j.offset = w.off
			w.diffID.Write(j.raw.Bytes())
			w.rawSize += int64(j.raw.Len())
			w.writeErr = w.write(j.out.Bytes())
			j.end = w.off
		}
		w.recycle(j.raw)
		w.recycle(j.out)
	}
}

func (w *writer) write(b []byte) error {
	n, err := w.dst.Write(b)
	w.blob.Write(b[:n])
	w.off += int64(n)
	if err != nil {
		return fmt.Errorf("estargz: writing blob: %w", err)
	}
	return nil
}

// cut ends the current member and queues it; it returns the member's job, or
// nil if the member was empty.
func (w *writer) cut(chunk *jsonEntry, whole bool) (*job, error) {
	if err := w.ctx.Err(); err != nil {
		return nil, err
	}
	if w.cur.Len() == 0 {
		return nil, nil
	}
	j := &job{raw: w.cur, out: w.buffer(), chunk: chunk, whole: whole, done: make(chan struct{})}
	w.cur = w.buffer()
	w.jobs <- j
	w.ordered <- j
	return j, nil
}

// stop shuts the pipeline down; it is safe to call more than once.
func (w *writer) stop() {
	if w.stopped {
		return
	}
	w.stopped = true
	close(w.jobs)
	close(w.ordered)
	w.wg.Wait()
	<-w.writerDone
}

func (w *writer) addLandmark(name string) error {
	h := &tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: 0o644, Size: 1}
	return w.addFile(h, bytes.NewReader([]byte{landmarkContents}))
}

func (w *writer) addEntry(src *io.SectionReader, e *srcEntry, entries []srcEntry, byName map[string]int) error {
	tr := tar.NewReader(io.NewSectionReader(src, e.start, e.end-e.start))
	h, err := tr.Next()
	if err != nil {
		return fmt.Errorf("%w: source tar: re-reading %q: %v", ErrFormat, e.name, err)
	}
	if h.Typeflag == tar.TypeLink {
		h.Linkname = firstHeaderName(src, &entries[byName[e.link]])
	}
	if h.Typeflag == tar.TypeRegA || h.Typeflag == tar.TypeGNUSparse {
		h.Typeflag = tar.TypeReg
	}
	return w.addFile(h, tr)
}

// firstHeaderName is the name exactly as the source tar spells it.
func firstHeaderName(src *io.SectionReader, e *srcEntry) string {
	h, err := tar.NewReader(io.NewSectionReader(src, e.start, e.end-e.start)).Next()
	if err != nil {
		return e.name
	}
	return h.Name
}

// addFile writes one tar entry: its header into the current member, and a
// regular file's content as one member per chunk.
func (w *writer) addFile(h *tar.Header, content io.Reader) error {
	out := &tar.Header{
		Typeflag: h.Typeflag, Name: h.Name, Linkname: h.Linkname, Size: h.Size, Mode: h.Mode,
		Uid: h.Uid, Gid: h.Gid, Uname: h.Uname, Gname: h.Gname, ModTime: h.ModTime,
		Devmajor: h.Devmajor, Devminor: h.Devminor,
	}
	ent := &jsonEntry{
		Name: h.Name, LinkName: h.Linkname, Mode: h.Mode, UID: h.Uid, GID: h.Gid,
		DevMajor: int(h.Devmajor), DevMinor: int(h.Devminor),
	}
	if !h.ModTime.IsZero() {
		ent.ModTime3339 = h.ModTime.UTC().Format(time.RFC3339)
	}
	if h.Uname != "" && !w.unames[h.Uid] {
		ent.Uname, w.unames[h.Uid] = h.Uname, true
	}
	if h.Gname != "" && !w.gnames[h.Gid] {
		ent.Gname, w.gnames[h.Gid] = h.Gname, true
	}
	for k, v := range h.PAXRecords {
		if name, ok := strings.CutPrefix(k, "SCHILY.xattr."); ok {
			if out.PAXRecords == nil {
				out.PAXRecords, ent.Xattrs = map[string]string{}, map[string][]byte{}
			}
			out.PAXRecords[k] = v
			ent.Xattrs[name] = []byte(v)
		}
	}
	switch h.Typeflag {
	case tar.TypeReg:
		ent.Type, ent.Size = layer.TypeReg, h.Size
	case tar.TypeDir:
		ent.Type = layer.TypeDir
	case tar.TypeSymlink:
		ent.Type = layer.TypeSymlink
	case tar.TypeLink:
		ent.Type = layer.TypeHardlink
	case tar.TypeChar:
		ent.Type = layer.TypeChar
	case tar.TypeBlock:
		ent.Type = layer.TypeBlock
	case tar.TypeFifo:
		ent.Type = layer.TypeFifo
	default:
		return fmt.Errorf("%w: %q: unsupported entry type %q", ErrFormat, h.Name, h.Typeflag)
	}
	if err := w.tw.WriteHeader(out); err != nil {
		return fmt.Errorf("estargz: %q: writing tar header: %w", h.Name, err)
	}
	w.toc = append(w.toc, ent)
	if ent.Type != layer.TypeReg {
		return nil
	}
	if h.Size == 0 {
		ent.Digest = digest.SHA256.FromBytes(nil).String()
		return nil
	}
	return w.addContent(ent, content)
}

func (w *writer) addContent(ent *jsonEntry, content io.Reader) error {
	var fileHash hash.Hash
	whole := ent.Size <= w.cfg.chunkSize
	if !whole {
		fileHash = sha256.New()
		content = io.TeeReader(content, fileHash)
	}
	c := ent
	for written := int64(0); written < ent.Size; {
		if _, err := w.cut(nil, false); err != nil { // the header member
			return err
		}
		size := min(w.cfg.chunkSize, ent.Size-written)
		w.cur.Grow(int(size)) // one allocation, not a doubling series
		if c != ent {
			w.toc = append(w.toc, c)
		}
		c.ChunkOffset = written
		if size < ent.Size-written {
			c.ChunkSize = size
		}
		if _, err := io.CopyN(w.tw, content, size); err != nil {
			return fmt.Errorf("%w: %q: reading content: %v", ErrFormat, ent.Name, err)
		}
		j, err := w.cut(c, whole)
		if err != nil {
			return err
		}
		w.starts[c] = j
		if w.cfg.endOffsets {
			w.lasts[ent] = j
		}
		written += size
		c = &jsonEntry{Name: ent.Name, Type: TypeChunk}
	}
	if fileHash != nil {
		ent.Digest = digest.NewDigest(digest.SHA256, fileHash).String()
	}
	return nil
}

// finish writes the remaining members, the TOC and the footer.
func (w *writer) finish() (*Result, error) {
	if err := w.tw.Flush(); err != nil { // padding of the last file
		return nil, fmt.Errorf("estargz: %w", err)
	}
	if _, err := w.cut(nil, false); err != nil {
		return nil, err
	}
	w.stop()
	if w.writeErr != nil {
		return nil, w.writeErr
	}
	for e, j := range w.starts {
		e.Offset = j.offset
	}
	for e, j := range w.lasts {
		e.EndOffset = j.end
	}
	tocJSON, err := json.Marshal(&jsonTOC{Version: 1, Entries: w.toc})
	if err != nil {
		return nil, fmt.Errorf("estargz: encoding TOC: %w", err)
	}
	var trailer bytes.Buffer
	if err := tar.NewWriter(&trailer).Close(); err != nil {
		return nil, fmt.Errorf("estargz: %w", err)
	}
	end, err := w.cfg.comp.End(w.off, tocJSON, trailer.Bytes())
	if err != nil {
		return nil, err
	}
	w.diffID.Write(end.Raw)
	w.rawSize += int64(len(end.Raw))
	if err := w.write(end.Blob); err != nil {
		return nil, err
	}
	return &Result{
		Digest:           digest.NewDigest(digest.SHA256, w.blob),
		Size:             w.off,
		DiffID:           digest.NewDigest(digest.SHA256, w.diffID),
		UncompressedSize: w.rawSize,
		TOCDigest:        end.TOCDigest,
		Annotations:      end.Annotations,
	}, nil
}
