package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"time"

	"github.com/lazysnap/lazysnap/convert"
	"github.com/lazysnap/lazysnap/soci"
)

const indexUsage = `usage: lazysnap index [flags] SRC [DST]

Builds a SOCI zTOC for each gzip layer of the image at SRC, without
changing a layer, and writes the image with a SOCI v2 index to DST (SRC
when DST is not given), as 'soci convert' does: the image manifest is
annotated with the index's digest and listed, with the index, in an image
index. lazysnap serve then mounts those layers lazily. SRC and DST are
registry references or OCI layout directories, as for lazysnap convert; a
registry DST gets only the new manifests and zTOCs uploaded.

flags:`

func runIndex(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("index", flag.ContinueOnError)
	fs.SetOutput(stderr)
	span := fs.Int64("span-size", soci.DefaultSpanSize, "uncompressed bytes between checkpoints: the unit fetched, verified and inflated")
	minSize := fs.Int64("min-layer-size", 0, "layers smaller than this many bytes get no zTOC (they are pulled whole)")
	parallel := fs.Int("parallel", 2, "layers indexed at once")
	plat := platformFlag(fs)
	reg := addRegistryFlags(fs)
	fs.Usage = func() {
		fmt.Fprintln(stderr, indexUsage)
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if err == flag.ErrHelp {
			return nil
		}
		return errUsage{err.Error()}
	}
	if fs.NArg() < 1 || fs.NArg() > 2 {
		fs.Usage()
		return errUsage{"want SRC and an optional DST"}
	}
	src, err := parseLocation(fs.Arg(0))
	if err != nil {
		return err
	}
	var dst convert.Location
	if fs.NArg() == 2 {
		if dst, err = parseLocation(fs.Arg(1)); err != nil {
			return err
		}
	}
	platforms, err := convert.ParsePlatforms(*plat)
	if err != nil {
		return errUsage{err.Error()}
	}
	log := logger(ctx)
	var ropts convert.Options
	if src.Ref != "" || dst.Ref != "" {
		ropts.Resolver = reg.resolver(ctx)
	}
	opts := convert.IndexOptions{SpanSize: *span, MinLayerSize: *minSize, Parallel: *parallel, Platforms: platforms,
		Progress: func(l convert.IndexLayerReport) {
			if l.Ztoc == nil {
				log.InfoContext(ctx, "layer skipped", "digest", l.Layer.Digest, "reason", l.Skipped)
				return
			}
			log.InfoContext(ctx, "layer indexed", "digest", l.Layer.Digest, "ztoc", l.Ztoc.Digest, "size", l.Ztoc.Size, "files", l.Files, "spans", l.Spans)
		}}
	start := time.Now()
	rep, err := convert.IndexAt(ctx, src, dst, opts, ropts)
	if err != nil {
		return err
	}
	return rep.WriteSummary(stdout, time.Since(start))
}
