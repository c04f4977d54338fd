package zran

import (
	"bytes"
	stdgzip "compress/gzip"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	kgzip "github.com/klauspost/compress/gzip"
)

// benchBlob is a realistic layer: the Debian rootfs tar (make rootfs)
// compressed by gzip -6, cached under /var/tmp/zran-bench; ZRAN_BENCH_GZ
// names another gzip file.
func benchBlob(b *testing.B) []byte {
	b.Helper()
	path := os.Getenv("ZRAN_BENCH_GZ")
	if path == "" {
		path = "/var/tmp/zran-bench/bookworm.tar.gz"
		if _, err := os.Stat(path); err != nil {
			const tarPath = "/var/tmp/lazysnap-rootfs/bookworm.tar"
			if _, err := os.Stat(tarPath); err != nil {
				b.Skipf("no benchmark input: run make rootfs or set ZRAN_BENCH_GZ (%v)", err)
			}
			if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
				b.Fatal(err)
			}
			gz, err := exec.Command("gzip", "-6", "-c", tarPath).Output()
			if err != nil {
				b.Fatal(err)
			}
			if err := os.WriteFile(path, gz, 0o644); err != nil {
				b.Fatal(err)
			}
		}
	}
	blob, err := os.ReadFile(path)
	if err != nil {
		b.Fatal(err)
	}
	return blob
}

// cpuTime is the process's user and system CPU time so far.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// cpuLoop runs b.Loop and reports throughput per CPU second (MB/cpu-s), which
// a machine shared with other work distorts less than MB/s.
func cpuLoop(b *testing.B, bytes int64, body func()) {
	b.SetBytes(bytes)
	b.ReportAllocs()
	c0, n := cpuTime(), 0
	for b.Loop() {
		body()
		n++
	}
	b.ReportMetric(float64(bytes)*float64(n)/1e6/(cpuTime()-c0).Seconds(), "MB/cpu-s")
}

// drain reads r to its end in 256 KiB reads.
func drain(b *testing.B, r io.Reader) int64 {
	buf := make([]byte, 256<<10)
	var n int64
	for {
		k, err := r.Read(buf)
		n += int64(k)
		if err == io.EOF {
			return n
		}
		if err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkIndexer: indexing speed in compressed bytes per second, span 4 MiB
// (SOCI's default), compared with plain decoding by compress/gzip and
// klauspost/compress/gzip of the same stream.
func BenchmarkIndexer(b *testing.B) {
	blob := benchBlob(b)
	b.Run("zran", func(b *testing.B) {
		cpuLoop(b, int64(len(blob)), func() {
			x, err := NewIndexer(bytes.NewReader(blob), 4<<20)
			if err != nil {
				b.Fatal(err)
			}
			drain(b, x)
		})
	})
	b.Run("compress-gzip", func(b *testing.B) {
		cpuLoop(b, int64(len(blob)), func() {
			r, err := stdgzip.NewReader(bytes.NewReader(blob))
			if err != nil {
				b.Fatal(err)
			}
			drain(b, r)
		})
	})
	b.Run("klauspost-gzip", func(b *testing.B) {
		cpuLoop(b, int64(len(blob)), func() {
			r, err := kgzip.NewReader(bytes.NewReader(blob))
			if err != nil {
				b.Fatal(err)
			}
			drain(b, r)
		})
	})
}

// BenchmarkResume: resuming at a checkpoint in the middle of the stream and
// producing 4 MiB (SetBytes counts the 4 MiB).
func BenchmarkResume(b *testing.B) {
	blob := benchBlob(b)
	x, err := NewIndexer(bytes.NewReader(blob), 4<<20)
	if err != nil {
		b.Fatal(err)
	}
	drain(b, x)
	cps := x.Checkpoints()
	cp := cps[len(cps)/2]
	start := cp.In - int64(min(cp.Bits, 1))
	const n = 4 << 20
	buf := make([]byte, n)
	cpuLoop(b, n, func() {
		r, err := Resume(bytes.NewReader(blob[start:]), cp)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := io.ReadFull(r, buf); err != nil {
			b.Fatal(err)
		}
	})
}
