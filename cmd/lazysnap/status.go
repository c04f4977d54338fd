package main

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"time"

	"github.com/lazysnap/lazysnap/config"
	"github.com/lazysnap/lazysnap/ops"
)

// The status endpoint. lazysnap serve always serves GET /status (JSON) and
// GET /metrics on a unix socket, status.sock beside the gRPC socket unless
// status_address says otherwise, and on metrics_address over TCP when that
// is set. `lazysnap status` finds the socket from the same configuration
// file, or is given --address.

// runStatus is `lazysnap status`.
func runStatus(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("status", flag.ContinueOnError)
	fs.SetOutput(stderr)
	cfgPath := configFlag(fs, "lazysnap serve's TOML configuration file (to find its status socket)")
	addr := fs.String("address", "", "status endpoint: a unix socket path or an http:// URL (default: "+config.StatusSocketName+" beside the configured gRPC socket)")
	asJSON := fs.Bool("json", false, "print the status as JSON")
	timeout := fs.Duration("timeout", 10*time.Second, "give up after this long")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: lazysnap status [flags]\n\nShows the lazily mounted layers of a running lazysnap serve by image: how\nmuch of each is fetched, its state and errors, then cache and registry use.\n\nflags:")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if err == flag.ErrHelp {
			return nil
		}
		return errUsage{err.Error()}
	}
	if fs.NArg() != 0 {
		fs.Usage()
		return errUsage{"no arguments expected"}
	}
	target := *addr
	if target == "" {
		cfg, err := config.Load(configPath(fs, *cfgPath))
		if err != nil {
			return err
		}
		target = cfg.StatusSocket()
	}
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	body, err := ops.Fetch(ctx, target)
	if err != nil {
		return err
	}
	var rep ops.Report
	if err := json.Unmarshal(body, &rep); err != nil {
		return fmt.Errorf("%s: bad status: %w", target, err)
	}
	if *asJSON {
		var out bytes.Buffer
		if err := json.Indent(&out, body, "", "  "); err != nil {
			return err
		}
		_, err := stdout.Write(out.Bytes())
		return err
	}
	return ops.WriteText(stdout, rep)
}
