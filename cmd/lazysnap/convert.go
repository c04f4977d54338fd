package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/lazysnap/lazysnap/convert"
	"github.com/lazysnap/lazysnap/convert/record"
	"github.com/lazysnap/lazysnap/estargz"
	"github.com/lazysnap/lazysnap/layer"
)

const convertUsage = `usage: lazysnap convert [flags] SRC DST
       lazysnap convert -record [flags] SRC DST -- CMD [ARG...]

SRC and DST are each a registry image reference or a local OCI image layout:
  docker://REF     a registry reference, always
  oci:PATH         a local path, always
  /P, ./P, ../P    a local path
  HOST/REPO[:TAG]  a registry reference when HOST holds a "." or ":" or is
                   localhost: 127.0.0.1:5000/app:1, docker.io/library/x:y
  anything else    a local path (out, images/app, app.tar)
A string that reads as a reference and also exists as a path is refused:
say which with a prefix. A local SRC is a layout directory or archive
(.tar); a local DST is a directory, or an archive if it ends in .tar
(importable with 'ctr images import'). References without a tag get
:latest; a DST reference needs a tag. Registries are reached as lazysnap
serve reaches them: the hosts directory (a push needs "push" in the host's
capabilities) and the Docker config's credentials. With -record a registry
SRC is pulled first; the recorded list goes to -record-list, by default
DST.prioritized for a local DST.

flags:`

func runConvert(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("convert", flag.ContinueOnError)
	fs.SetOutput(stderr)
	chunk := fs.Int64("chunk-size", estargz.DefaultChunkSize, "largest chunk of a file fetched and verified as a unit, in bytes")
	format := fs.String("format", convert.FormatEStargz, "layer format written: "+strings.Join(convert.Formats(layer.InputTar), " or "))
	level := fs.Int("level", 0, fmt.Sprintf("compression level: gzip 1 (fastest) to 9 (smallest), default %d; zstd 1 to 22, default 3", estargz.DefaultCompressionLevel))
	prio := fs.String("prioritized-files", "", "file listing paths (one per line) to place first in every layer, for prefetch")
	rec := fs.Bool("record", false, "run the command after -- chrooted in SRC's unpacked image (as root), and place the files it opens first\n(after any -prioritized-files); the list is written to -record-list")
	recList := fs.String("record-list", "", "where -record writes the list of files (default DST.prioritized for a local DST, none for a registry DST)")
	recTimeout := fs.Duration("record-timeout", 10*time.Minute, "longest the -record command may run")
	plat := platformFlag(fs)
	reg := addRegistryFlags(fs)
	fs.Usage = func() {
		fmt.Fprintln(stderr, convertUsage)
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
	src, err := parseLocation(args[0])
	if err != nil {
		return err
	}
	dst, err := parseLocation(args[1])
	if err != nil {
		return err
	}
	log := logger(ctx)
	opts := convert.Options{Format: *format, ChunkSize: *chunk, CompressionLevel: *level}
	if opts.Platforms, err = convert.ParsePlatforms(*plat); err != nil {
		return errUsage{err.Error()}
	}
	if src.Ref != "" || dst.Ref != "" {
		opts.Resolver = reg.resolver(ctx)
		opts.Transfer = func(r convert.TransferReport) {
			switch {
			case !r.Push:
				log.InfoContext(ctx, "pulled", "ref", r.Ref, "digest", r.Desc.Digest, "size", r.Desc.Size)
			case r.Existing:
				log.InfoContext(ctx, "already in the registry", "ref", r.Ref, "digest", r.Desc.Digest)
			default:
				log.InfoContext(ctx, "pushed", "ref", r.Ref, "digest", r.Desc.Digest, "size", r.Desc.Size)
			}
		}
	}
	if *prio != "" {
		if opts.Prioritized, err = convert.ReadPrioritized(*prio); err != nil {
			return err
		}
	}
	start := time.Now()
	var pulled *convert.PullReport
	if *rec {
		if src.Ref != "" { // record in the pulled image, and convert that
			tmp, err := os.MkdirTemp("", "lazysnap-pull-")
			if err != nil {
				return err
			}
			defer os.RemoveAll(tmp)
			if pulled, err = convert.Pull(ctx, src.Ref, tmp, opts); err != nil {
				return err
			}
			src = convert.Location{Path: tmp}
		}
		files, err := record.Layout(ctx, src.Path, argv, record.Options{Stdout: stderr, Stderr: stderr, Timeout: *recTimeout})
		if err != nil {
			return err
		}
		list := *recList
		if list == "" && dst.Path != "" {
			list = strings.TrimSuffix(dst.Path, "/") + ".prioritized"
		}
		if list != "" {
			if err := os.WriteFile(list, []byte(strings.Join(files, "\n")+"\n"), 0o644); err != nil {
				return err
			}
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
			"size", l.Result.Desc.Size, "toc", l.Result.TOCDigest)
		if len(l.Result.MissingPrioritized) > 0 {
			log.DebugContext(ctx, "prioritized files not in layer", "digest", l.To.Digest, "count", len(l.Result.MissingPrioritized))
		}
	}
	rep, err := convert.ImageAt(ctx, src, dst, opts)
	if err != nil {
		return err
	}
	if rep.Pull == nil {
		rep.Pull = pulled
	}
	return rep.WriteSummary(stdout, time.Since(start))
}

// platformFlag is --platform of convert and index.
func platformFlag(fs *flag.FlagSet) *string {
	return fs.String("platform", "", "only these platforms of an image index, os/arch[/variant] comma-separated (linux/amd64,linux/arm64);\nthe others are left out of DST (default: every platform)")
}

// parseLocation is convert.ParseLocation that refuses a string without a
// prefix that reads as a reference and also exists as a path.
func parseLocation(s string) (convert.Location, error) {
	loc, err := convert.ParseLocation(s)
	if err != nil {
		return loc, err
	}
	if loc.Ref != "" && !strings.HasPrefix(s, convert.RegistryPrefix) {
		if _, err := os.Lstat(s); err == nil {
			return loc, errUsage{fmt.Sprintf("%s is both a path and an image reference: write ./%s or %s%s for the path, %s%s for the registry",
				s, s, convert.LayoutPrefix, s, convert.RegistryPrefix, s)}
		}
	}
	return loc, nil
}
