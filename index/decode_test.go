package index_test

import (
	"archive/tar"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"reflect"
	"runtime"
	"runtime/debug"
	"sync"
	"testing"
	"time"

	"github.com/klauspost/compress/gzip"
	"github.com/lazysnap/lazysnap/estargz"
	"github.com/lazysnap/lazysnap/index"
	"github.com/lazysnap/lazysnap/layer"
	"github.com/opencontainers/go-digest"
)

// openIndex decodes the TOC of the eStargz blob in sr straight into an
// index, as the eStargz format's Open does.
func openIndex(sr *io.SectionReader, opts ...estargz.OpenOption) (*index.Index, error) {
	return index.Decode(func(s layer.Sink) (layer.Info, error) {
		info, err := estargz.DecodeTOC(sr, s, opts...)
		return info.LayerInfo(), err
	})
}

// synthBlob is an eStargz blob whose data (before the TOC) reads as zeros
// and takes no memory: only the TOC is read, and a measure of the heap is
// not to hold the data or let the collector's headroom grow with it.
type synthBlob struct {
	dataEnd int64
	tail    []byte // the TOC member and the footer
}

func (s *synthBlob) ReadAt(p []byte, off int64) (int, error) {
	n := int(max(0, min(int64(len(p)), s.dataEnd-off)))
	clear(p[:n])
	off += int64(n)
	if n < len(p) && off-s.dataEnd < int64(len(s.tail)) {
		n += copy(p[n:], s.tail[off-s.dataEnd:])
	}
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

func (s *synthBlob) section() *io.SectionReader {
	return io.NewSectionReader(s, 0, s.dataEnd+int64(len(s.tail)))
}

// syntheticBlob returns an eStargz blob whose TOC has n entries laid out as
// syntheticTOC's (directories of 99 files of one chunk each), serialized as
// the reference writer does (indented with tabs), and the TOC's digest. The
// data before the TOC is zeros: only the TOC is read.
func syntheticBlob(tb testing.TB, n int) (*synthBlob, digest.Digest) {
	tb.Helper()
	type ent struct {
		Name        string `json:"name"`
		Type        string `json:"type"`
		Size        int64  `json:"size,omitempty"`
		ModTime     string `json:"modtime,omitempty"`
		Mode        int64  `json:"mode,omitempty"`
		Uname       string `json:"userName,omitempty"`
		Gname       string `json:"groupName,omitempty"`
		Offset      int64  `json:"offset,omitempty"`
		Digest      string `json:"digest,omitempty"`
		ChunkDigest string `json:"chunkDigest,omitempty"`
	}
	mt := time.Unix(1700000000, 0).UTC().Format(time.RFC3339)
	ents := []ent{{Name: "usr/", Type: "dir", Mode: 0o755, ModTime: mt}, {Name: "usr/share/", Type: "dir", Mode: 0o755, ModTime: mt}}
	off := int64(512)
	for i := 0; len(ents) < n; i++ {
		dir := fmt.Sprintf("usr/share/pkg-%04d", i)
		ents = append(ents, ent{Name: dir + "/", Type: "dir", Mode: 0o755, ModTime: mt, Uname: "root", Gname: "root"})
		for j := 0; j < 99 && len(ents) < n; j++ {
			d := digest.FromString(fmt.Sprint(i, j)).String()
			ents = append(ents, ent{Name: fmt.Sprintf("%s/file-%02d.txt", dir, j), Type: "reg", Size: 1000, ModTime: mt,
				Mode: 0o644, Uname: "root", Gname: "root", Offset: off, Digest: d, ChunkDigest: d})
			off += 600
		}
	}
	js, err := json.MarshalIndent(struct {
		Version int   `json:"version"`
		Entries []ent `json:"entries"`
	}{1, ents}, "", "\t")
	if err != nil {
		tb.Fatal(err)
	}
	var blob bytes.Buffer
	zw := gzip.NewWriter(&blob)
	tw := tar.NewWriter(zw)
	tw.WriteHeader(&tar.Header{Name: estargz.TOCTarName, Typeflag: tar.TypeReg, Mode: 0o444, Size: int64(len(js))})
	tw.Write(js)
	tw.Close()
	zw.Close()
	blob.Write(estargz.Footer(off))
	return &synthBlob{dataEnd: off, tail: blob.Bytes()}, digest.FromBytes(js)
}

func TestOpenMatchesBuild(t *testing.T) {
	for _, tc := range []struct {
		name string
		n    int
	}{
		{"tiny", 3},
		{"one dir", 100},
		{"10k", 10_000},
		{"reserved", 20_000}, // JSON over 4 MiB: the arrays are reserved
	} {
		t.Run(tc.name, func(t *testing.T) {
			blob, dg := syntheticBlob(t, tc.n)
			r, err := estargz.Open(blob.section(), estargz.WithTOCDigest(dg))
			if err != nil {
				t.Fatal(err)
			}
			want, err := index.Build(r.TOC().Entries, r.TOC().LayerInfo())
			if err != nil {
				t.Fatal(err)
			}
			got, err := openIndex(blob.section(), estargz.WithTOCDigest(dg))
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, want) {
				t.Fatalf("index.Open and index.Build differ: %v, %v", got, want)
			}
		})
	}
}

func TestOpenEntryCap(t *testing.T) {
	blob, dg := syntheticBlob(t, 1000)
	for _, tc := range []struct {
		name string
		max  int
		ok   bool
	}{
		{"under", 1000, true},
		{"over", 999, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := openIndex(blob.section(), estargz.WithTOCDigest(dg), estargz.WithMaxEntries(tc.max))
			if tc.ok != (err == nil) {
				t.Fatalf("cap %d: %v", tc.max, err)
			}
			if !tc.ok && !errorsIs(err, estargz.ErrTooManyEntries) {
				t.Fatalf("cap %d: %v, want ErrTooManyEntries", tc.max, err)
			}
		})
	}
}

// peakHeap runs fn with the collector at GOGC=10, so that the heap stays
// close to what is live, and returns the most heap (objects) seen above
// what was live before, sampled every millisecond.
func peakHeap(fn func()) uint64 {
	defer debug.SetGCPercent(debug.SetGCPercent(10))
	runtime.GC()
	runtime.GC() // the first may leave a large heap's garbage counted
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	base := ms.HeapAlloc
	var (
		peak uint64
		wg   sync.WaitGroup
		done = make(chan struct{})
	)
	wg.Add(1)
	go func() {
		defer wg.Done()
		var ms runtime.MemStats
		for {
			runtime.ReadMemStats(&ms)
			peak = max(peak, ms.HeapAlloc)
			select {
			case <-done:
				return
			case <-time.After(time.Millisecond):
			}
		}
	}()
	fn()
	close(done)
	wg.Wait() // the sampler has stopped writing peak
	runtime.ReadMemStats(&ms)
	peak = max(peak, ms.HeapAlloc)
	if peak < base {
		return 0
	}
	return peak - base
}

// TestOpenPeakMemory bounds the heap a TOC decode into an index takes at
// its peak, per entry (LAZYSNAP_TOC_PEAK=1M runs it at a million entries).
func TestOpenPeakMemory(t *testing.T) {
	if testing.Short() {
		t.Skip("short")
	}
	n := 100_000
	if testingEnv("LAZYSNAP_TOC_PEAK") == "1M" {
		n = 1_000_000
	}
	blob, dg := syntheticBlob(t, n)
	var x *index.Index
	peak := peakHeap(func() {
		var err error
		if x, err = openIndex(blob.section(), estargz.WithTOCDigest(dg), estargz.WithMaxTOCSize(1<<30)); err != nil {
			t.Fatal(err)
		}
	})
	runtime.KeepAlive(blob) // else collected within fn, out of the measure
	per := peak / uint64(n)
	t.Logf("%d entries: peak %d B/entry, index %d B/entry", n, per, x.MemoryBytes()/n)
	if per > 330 {
		t.Fatalf("peak %d bytes per entry, budget 330", per)
	}
	runtime.KeepAlive(x)
}

// BenchmarkDecodeTOC100k decodes a 100k-entry TOC (as a Debian tree's)
// into an index; B/s counts the TOC JSON.
func BenchmarkDecodeTOC100k(b *testing.B) {
	const n = 100_000
	blob, dg := syntheticBlob(b, n)
	r, err := estargz.Open(blob.section(), estargz.WithTOCDigest(dg))
	if err != nil {
		b.Fatal(err)
	}
	_ = r
	js := jsonSize(b, blob)
	b.SetBytes(js)
	b.ReportAllocs()
	var x *index.Index
	for b.Loop() {
		if x, err = openIndex(blob.section(), estargz.WithTOCDigest(dg)); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(x.MemoryBytes())/n, "index-B/entry")
	b.ReportMetric(float64(peakHeap(func() { x, _ = openIndex(blob.section(), estargz.WithTOCDigest(dg)) }))/n, "peak-B/entry")
	runtime.KeepAlive(blob)
}

// jsonSize is the size of the blob's TOC JSON.
func jsonSize(tb testing.TB, blob *synthBlob) int64 {
	js, err := estargz.ReadTOCMember(bytes.NewReader(blob.tail), 1<<30)
	if err != nil {
		tb.Fatal(err)
	}
	return int64(len(js))
}

func errorsIs(err, target error) bool { return errors.Is(err, target) }

func testingEnv(k string) string { return os.Getenv(k) }
