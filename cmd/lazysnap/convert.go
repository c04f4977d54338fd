package main

import (
	"bufio"
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/lazysnap/lazysnap/convert"
	"github.com/lazysnap/lazysnap/estargz"
)

func runConvert(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("convert", flag.ContinueOnError)
	fs.SetOutput(stderr)
	chunk := fs.Int64("chunk-size", estargz.DefaultChunkSize, "largest chunk of a file fetched and verified as a unit, in bytes")
	level := fs.Int("level", estargz.DefaultCompressionLevel, "gzip level, 1 (fastest) to 9 (smallest)")
	prio := fs.String("prioritized-files", "", "file listing paths (one per line) to place first in every layer, for prefetch")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: lazysnap convert [flags] SRC DST\n\nSRC is an OCI image layout directory or archive (.tar); DST is a directory,\nor an archive path ending in .tar (importable with 'ctr images import').\n\nflags:")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if err == flag.ErrHelp {
			return nil
		}
		return errUsage{err.Error()}
	}
	if fs.NArg() != 2 {
		fs.Usage()
		return errUsage{"want SRC and DST"}
	}
	opts := convert.Options{ChunkSize: *chunk, CompressionLevel: *level}
	if *prio != "" {
		names, err := readLines(*prio)
		if err != nil {
			return err
		}
		opts.Prioritized = names
	}
	log := logger(ctx)
	opts.Progress = func(l convert.LayerReport) {
		if l.Result == nil {
			log.InfoContext(ctx, "layer kept", "digest", l.From.Digest, "reason", l.KeptReason)
			return
		}
		log.InfoContext(ctx, "layer converted", "from", l.From.Digest, "to", l.To.Digest,
			"size", l.Result.Size, "toc", l.Result.TOCDigest)
		if len(l.Result.MissingPrioritized) > 0 {
			log.DebugContext(ctx, "prioritized files not in layer", "digest", l.To.Digest, "count", len(l.Result.MissingPrioritized))
		}
	}
	start := time.Now()
	rep, err := convert.Image(ctx, fs.Arg(0), fs.Arg(1), opts)
	if err != nil {
		return err
	}
	var in, out int64
	converted := 0
	for _, l := range rep.Layers {
		in += l.From.Size
		out += l.To.Size
		if l.Result != nil {
			converted++
		}
	}
	_, err = fmt.Fprintf(stdout, "converted %d of %d layers in %d manifests: %d -> %d bytes in %s\n",
		converted, len(rep.Layers), rep.Manifests, in, out, time.Since(start).Round(time.Millisecond))
	return err
}

func readLines(path string) ([]string, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if l := strings.TrimSpace(sc.Text()); l != "" && !strings.HasPrefix(l, "#") {
			out = append(out, l)
		}
	}
	return out, sc.Err()
}
