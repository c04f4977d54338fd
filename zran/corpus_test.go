package zran

import (
	"bytes"
	stdgzip "compress/gzip"
	"crypto/sha256"
	"errors"
	"fmt"
	"hash"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/klauspost/pgzip"
	"github.com/lazysnap/lazysnap/internal/testenv"
)

// The corpus: real layers as tar, compressed by the compressors images are
// made with, cached out of git (scripts/zran-corpus.sh fills it).
const (
	corpusEnv      = "LAZYSNAP_ZRAN_CORPUS"          // its directory
	corpusGenEnv   = "LAZYSNAP_ZRAN_CORPUS_GENERATE" // 1: compress what is missing
	corpusDir      = "/var/tmp/lazysnap-zran-corpus"
	defaultRootfs  = "/var/tmp/lazysnap-rootfs/bookworm.tar" // make rootfs
	defaultTorch   = "/var/tmp/lazysnap-torch/torch.tar"     // scripts/torch-image.sh
	torchTarEnv    = "LAZYSNAP_TORCH_TAR"
	rootfsTarEnv   = "LAZYSNAP_ROOTFS_TAR"
	corpusReadSize = 1 << 20
)

// corpusSource is a tar of a real root filesystem.
type corpusSource struct {
	name    string
	env     string // names another path
	path    string
	span    int64 // checkpoint span: each resume inflates this much
	require bool  // LAZYSNAP_REQUIRE_INTEGRATION=1 generates it rather than skip
}

// corpusCompressor writes the gzip of src to dst; tool is the program it
// runs, if any.
type corpusCompressor struct {
	name string
	tool string
	run  func(src string, dst io.Writer) error
}

func corpusSources() []corpusSource {
	return []corpusSource{
		{"bookworm", rootfsTarEnv, defaultRootfs, 1 << 20, true},
		{"torch", torchTarEnv, defaultTorch, 4 << 20, false},
	}
}

func corpusCompressors() []corpusCompressor {
	command := func(name string, args ...string) func(string, io.Writer) error {
		return func(src string, dst io.Writer) error {
			cmd := exec.Command(name, append(args, src)...)
			cmd.Stdout = dst
			var stderr bytes.Buffer
			cmd.Stderr = &stderr
			if err := cmd.Run(); err != nil {
				return fmt.Errorf("%s: %w: %s", cmd, err, stderr.Bytes())
			}
			return nil
		}
	}
	goWriter := func(newWriter func(io.Writer) io.WriteCloser) func(string, io.Writer) error {
		return func(src string, dst io.Writer) error {
			f, err := os.Open(src)
			if err != nil {
				return err
			}
			defer f.Close()
			w := newWriter(dst)
			if _, err := io.Copy(w, f); err != nil {
				return err
			}
			return w.Close()
		}
	}
	// a gzip stream made by zlib's deflate (as pigz, Python and most C tools
	// make them): Python's zlib with wbits 31
	const zlibScript = `import sys, zlib
c = zlib.compressobj(6, zlib.DEFLATED, 31)
with open(sys.argv[1], "rb") as f:
    while b := f.read(1 << 20):
        sys.stdout.buffer.write(c.compress(b))
sys.stdout.buffer.write(c.flush())
`
	return []corpusCompressor{
		{"gzip-1", "gzip", command("gzip", "-1", "-c")},
		{"gzip-6", "gzip", command("gzip", "-6", "-c")},
		{"gzip-9", "gzip", command("gzip", "-9", "-c")},
		{"pigz", "pigz", command("pigz", "-6", "-c")},
		{"zlib", "python3", command("python3", "-c", zlibScript)},
		{"compress-gzip", "", goWriter(func(w io.Writer) io.WriteCloser { return stdgzip.NewWriter(w) })},
		{"pgzip", "", goWriter(func(w io.Writer) io.WriteCloser { return pgzip.NewWriter(w) })},
	}
}

// corpusBlob returns the path of src compressed by c in the corpus,
// compressing it first if it is missing and that is allowed; otherwise it
// skips (or fails, if the source is required under
// LAZYSNAP_REQUIRE_INTEGRATION=1) with the reason.
func corpusBlob(t *testing.T, dir string, src corpusSource, c corpusCompressor) string {
	required := src.require && testenv.Required() // compress bookworm's, fail rather than skip
	stop := t.Skipf
	if required {
		stop = t.Fatalf
	}
	path := filepath.Join(dir, src.name+"."+c.name+".gz")
	if _, err := os.Stat(path); err == nil {
		return path
	}
	if !required && os.Getenv(corpusGenEnv) == "" {
		stop("%s is not in the corpus: run scripts/zran-corpus.sh (or set %s=1)", path, corpusGenEnv)
	}
	tarPath := src.path
	if p := os.Getenv(src.env); p != "" {
		tarPath = p
	}
	if _, err := os.Stat(tarPath); err != nil {
		stop("no %s tar to compress (%v)", src.name, err)
	}
	if c.tool != "" {
		if _, err := exec.LookPath(c.tool); err != nil {
			stop("%s is not installed (make deps)", c.tool)
		}
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	tmp, err := os.CreateTemp(dir, filepath.Base(path)+".*.tmp")
	if err != nil {
		t.Fatal(err)
	}
	defer os.Remove(tmp.Name())
	t.Logf("compressing %s with %s into %s", tarPath, c.name, path)
	err = c.run(tarPath, tmp)
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		t.Fatalf("%s: %v", c.name, err)
	}
	if err := os.Chmod(tmp.Name(), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		t.Fatal(err)
	}
	return path
}

// TestCorpus (issue 21): real layers compressed by gzip -1/-6/-9, pigz,
// zlib, compress/gzip and pgzip inflate, whole and resumed from every
// checkpoint to the next, to compress/gzip's bytes (compared by SHA-256 as
// they stream, so memory stays small). The bookworm tar runs when its files
// are in the corpus (LAZYSNAP_REQUIRE_INTEGRATION=1 compresses them), the
// torch one when they are too (scripts/zran-corpus.sh makes both). Any other
// *.gz file in the corpus directory runs as well (the script adds the layer
// that umoci packed in scripts/torch-image.sh).
func TestCorpus(t *testing.T) {
	dir := corpusDir
	if d := os.Getenv(corpusEnv); d != "" {
		dir = d
	}
	made := map[string]bool{}
	for _, src := range corpusSources() {
		for _, c := range corpusCompressors() {
			made[src.name+"."+c.name+".gz"] = true
			t.Run(src.name+"/"+c.name, func(t *testing.T) {
				checkCorpusBlob(t, corpusBlob(t, dir, src, c), src.span)
			})
		}
	}
	others, err := filepath.Glob(filepath.Join(dir, "*.gz"))
	if err != nil {
		t.Fatal(err)
	}
	for _, path := range others {
		if name := filepath.Base(path); !made[name] {
			t.Run(name, func(t *testing.T) { checkCorpusBlob(t, path, 4<<20) })
		}
	}
}

// checkCorpusBlob indexes the gzip file at path, compares its output and
// the output of every span resumed from its checkpoint with compress/gzip's.
func checkCorpusBlob(t *testing.T, path string, span int64) {
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		t.Fatal(err)
	}

	x, err := NewIndexer(io.NewSectionReader(f, 0, st.Size()), span)
	if err != nil {
		t.Fatal(err)
	}
	whole := sha256.New()
	n, err := io.CopyBuffer(whole, x, make([]byte, corpusReadSize))
	if err != nil {
		t.Fatalf("indexing: %v after %d bytes", err, n)
	}
	if x.CompressedSize() != st.Size() {
		t.Errorf("CompressedSize %d, file %d bytes", x.CompressedSize(), st.Size())
	}
	cps := x.Checkpoints()

	// compress/gzip's output, hashed whole and between checkpoints
	zr, err := stdgzip.NewReader(io.NewSectionReader(f, 0, st.Size()))
	if err != nil {
		t.Fatal(err)
	}
	ref, spans := sha256.New(), make([][]byte, len(cps))
	for i, cp := range cps {
		end := n
		if i+1 < len(cps) {
			end = cps[i+1].Out
		}
		h := sha256.New()
		if _, err := io.CopyN(io.MultiWriter(ref, h), zr, end-cp.Out); err != nil {
			t.Fatalf("compress/gzip, span %d: %v", i, err)
		}
		spans[i] = h.Sum(nil)
	}
	if k, err := io.Copy(ref, zr); err != nil || k != 0 {
		t.Fatalf("compress/gzip: %d more bytes than the Indexer's %d (%v)", k, n, err)
	}
	if !bytes.Equal(whole.Sum(nil), ref.Sum(nil)) {
		t.Fatalf("the Indexer's %d bytes differ from compress/gzip's", n)
	}

	buf := make([]byte, corpusReadSize)
	for i, cp := range cps {
		start := cp.In - int64(min(cp.Bits, 1))
		r, err := Resume(io.NewSectionReader(f, start, st.Size()-start), cp)
		if err != nil {
			t.Fatalf("checkpoint %d: %v", i, err)
		}
		h, want := sha256.New(), n
		if i+1 < len(cps) {
			want = cps[i+1].Out
		}
		if err := copyExactly(h, r, want-cp.Out, buf, i+1 == len(cps)); err != nil {
			t.Fatalf("checkpoint %d (in %d bits %d out %d): %v", i, cp.In, cp.Bits, cp.Out, err)
		}
		if !bytes.Equal(h.Sum(nil), spans[i]) {
			t.Fatalf("checkpoint %d (in %d bits %d out %d): the span's %d bytes differ from compress/gzip's", i, cp.In, cp.Bits, cp.Out, want-cp.Out)
		}
	}
	t.Logf("%d compressed bytes, %d inflated, %d checkpoints", st.Size(), n, len(cps))
}

// copyExactly copies n bytes of r to h; at the end of the stream (last), r
// must end there.
func copyExactly(h hash.Hash, r io.Reader, n int64, buf []byte, last bool) error {
	if k, err := io.CopyBuffer(h, io.LimitReader(r, n), buf); err != nil || k != n {
		return fmt.Errorf("%d of %d bytes: %v", k, n, err)
	}
	if !last {
		return nil
	}
	if k, err := r.Read(buf); k != 0 || !errors.Is(err, io.EOF) {
		return fmt.Errorf("after the end: %d bytes, %v", k, err)
	}
	return nil
}
