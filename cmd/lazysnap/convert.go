package main

import (
	"bufio"
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/lazysnap/lazysnap/benchmarks/record"
	"github.com/lazysnap/lazysnap/convert"
	"github.com/lazysnap/lazysnap/estargz"
)

func runConvert(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("convert", flag.ContinueOnError)
	fs.SetOutput(stderr)
	chunk := fs.Int64("chunk-size", estargz.DefaultChunkSize, "largest chunk of a file fetched and verified as a unit, in bytes")
	level := fs.Int("level", estargz.DefaultCompressionLevel, "gzip level, 1 (fastest) to 9 (smallest)")
	prio := fs.String("prioritized-files", "", "file listing paths (one per line) to place first in every layer, for prefetch")
	rec := fs.Bool("record", false, "run the command after -- chrooted in SRC's unpacked image (as root), and place the files it opens first\n(after any -prioritized-files); the list is written to DST.prioritized")
	recTimeout := fs.Duration("record-timeout", 10*time.Minute, "longest the -record command may run")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: lazysnap convert [flags] SRC DST\n       lazysnap convert -record [flags] SRC DST -- CMD [ARG...]\n\n"+
			"SRC is an OCI image layout directory or archive (.tar; a directory with -record); DST is a directory,\n"+
			"or an archive path ending in .tar (importable with 'ctr images import').\n\nflags:")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if err == flag.ErrHelp {
			return nil
		}
		return errUsage{err.Error()}
	}
	args, argv := fs.Args(), []string(nil)
	if i := slices.Index(args, "--"); i >= 0 {
		args, argv = args[:i], args[i+1:]
	}
	if len(args) != 2 {
		fs.Usage()
		return errUsage{"want SRC and DST"}
	}
	if *rec != (len(argv) > 0) {
		return errUsage{"-record and a command after -- go together"}
	}
	src, dst := args[0], args[1]
	opts := convert.Options{ChunkSize: *chunk, CompressionLevel: *level}
	if *prio != "" {
		names, err := readLines(*prio)
		if err != nil {
			return err
		}
		opts.Prioritized = names
	}
	log := logger(ctx)
	if *rec {
		files, err := recordFiles(ctx, src, argv, *recTimeout, stderr)
		if err != nil {
			return err
		}
		list := strings.TrimSuffix(dst, "/") + ".prioritized"
		if err := os.WriteFile(list, []byte(strings.Join(files, "\n")+"\n"), 0o644); err != nil {
			return err
		}
		log.InfoContext(ctx, "recorded the files the command opened", "files", len(files), "list", list)
		opts.Prioritized = append(opts.Prioritized, files...)
	}
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
	rep, err := convert.Image(ctx, src, dst, opts)
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

// recordFiles unpacks the image of the layout dir into a scratch
// directory, runs argv in it and returns the files it opened, in
// first-access order, after the ones containerd reads to create a
// container (benchmarks/record does the work).
func recordFiles(ctx context.Context, layout string, argv []string, timeout time.Duration, out io.Writer) ([]string, error) {
	if fi, err := os.Stat(layout); err != nil || !fi.IsDir() {
		return nil, fmt.Errorf("-record needs SRC to be an OCI layout directory: %s", layout)
	}
	scratch, err := os.MkdirTemp("", "lazysnap-record-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(scratch)
	if err := record.Unpack(layout, scratch); err != nil {
		return nil, err
	}
	files, err := record.Trace(ctx, scratch, argv, record.Options{Stdout: out, Stderr: out, Timeout: timeout})
	if err != nil {
		return nil, err
	}
	return record.WithRuntimeFiles(scratch, files), nil
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
