// Command lazysnap-record records which files a workload opens in an image
// and, optionally, converts the image with those files first: the
// equivalent of a `lazysnap convert --record`.
//
//	go run ./benchmarks/cmd/lazysnap-record [-o LIST] [-convert DST] LAYOUT -- CMD [ARG...]
//
// LAYOUT is an OCI image layout directory (gzip, zstd or plain tar layers,
// eStargz included). Its layers are unpacked into a scratch directory, CMD
// runs there chrooted (as root) while fanotify reports every regular file
// it opens or executes, and the files are written to LIST one per line in
// first-access order. With -convert, LAYOUT is then converted to eStargz in
// DST (a directory, or an archive path ending in .tar) with those files
// prioritized, as `lazysnap convert -prioritized-files LIST LAYOUT DST`
// does.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/lazysnap/lazysnap/convert"
	"github.com/lazysnap/lazysnap/convert/record"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "lazysnap-record:", err)
		os.Exit(1)
	}
}

func run() error {
	out := flag.String("o", "", "write the list of files here (default: standard output, or DST.prioritized with -convert)")
	dst := flag.String("convert", "", "convert LAYOUT to eStargz here, with the recorded files first")
	work := flag.String("work", "", "scratch directory for the unpacked image (default: a new one under $TMPDIR)")
	timeout := flag.Duration("timeout", 10*time.Minute, "longest the workload may run")
	noRuntime := flag.Bool("no-runtime-files", false, "do not add the files containerd reads when it creates a container (etc/passwd, etc/group)")
	var env multiFlag
	flag.Var(&env, "env", "KEY=VALUE for the workload (repeatable; default PATH and HOME)")
	flag.Usage = func() {
		fmt.Fprintf(os.Stderr, "usage: lazysnap-record [flags] LAYOUT -- CMD [ARG...]\n\n"+
			"Runs CMD chrooted in LAYOUT's unpacked image, records the files it opens,\n"+
			"and optionally converts LAYOUT with them prioritized.\n\nflags:\n")
		flag.PrintDefaults()
	}
	flag.Parse()
	args := flag.Args()
	if len(args) < 2 {
		flag.Usage()
		return fmt.Errorf("want LAYOUT and a command")
	}
	layout, argv := args[0], args[1:]
	if argv[0] == "--" {
		argv = argv[1:]
	}
	if len(argv) == 0 {
		return fmt.Errorf("no command")
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	scratch := *work
	if scratch == "" {
		d, err := os.MkdirTemp("", "lazysnap-record-")
		if err != nil {
			return err
		}
		defer os.RemoveAll(d)
		scratch = d
	}
	start := time.Now()
	if err := record.Unpack(layout, scratch); err != nil {
		return err
	}
	fmt.Fprintf(os.Stderr, "unpacked %s in %s\n", layout, time.Since(start).Round(time.Millisecond))
	files, err := record.Trace(ctx, scratch, argv, record.Options{Env: env, Stdout: os.Stderr, Stderr: os.Stderr, Timeout: *timeout})
	if err != nil {
		return err
	}
	if !*noRuntime {
		files = record.WithRuntimeFiles(scratch, files)
	}
	list := strings.Join(files, "\n") + "\n"
	listPath := *out
	if listPath == "" && *dst != "" {
		listPath = strings.TrimSuffix(*dst, "/") + ".prioritized"
	}
	if listPath == "" {
		fmt.Print(list)
	} else if err := os.WriteFile(listPath, []byte(list), 0o644); err != nil {
		return err
	}
	fmt.Fprintf(os.Stderr, "recorded %d files%s\n", len(files), map[bool]string{true: " in " + listPath}[listPath != ""])
	if *dst == "" {
		return nil
	}
	start = time.Now()
	rep, err := convert.Image(ctx, layout, *dst, convert.Options{Prioritized: files})
	if err != nil {
		return err
	}
	fmt.Fprintf(os.Stderr, "converted %d layers to %s with the recorded files first in %s\n",
		len(rep.Layers), *dst, time.Since(start).Round(time.Millisecond))
	return nil
}

type multiFlag []string

func (m *multiFlag) String() string     { return strings.Join(*m, ",") }
func (m *multiFlag) Set(v string) error { *m = append(*m, v); return nil }
