package main

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"maps"
	"net/http"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/lazysnap/lazysnap/ops"
)

// The status endpoint. lazysnap serve always serves GET /status (JSON) and
// GET /metrics on a unix socket, status.sock beside the gRPC socket unless
// status_address says otherwise, and on metrics_address over TCP when that
// is set. `lazysnap status` finds the socket from the same configuration
// file, or is given --address.

// statusSocketName is the status socket's name beside the gRPC socket.
const statusSocketName = "status.sock"

// statusReporter assembles GET /status: a ops.Server, or a
// fusemanager.Status when a fuse manager serves the layers.
type statusReporter interface {
	Report(ctx context.Context) ops.Report
}

// opsHandler serves /metrics and /status.
func opsHandler(m *ops.Metrics, st statusReporter) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", m.Handler())
	mux.HandleFunc("GET /status", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		_ = enc.Encode(st.Report(r.Context()))
	})
	return mux
}

// runStatus is `lazysnap status`.
func runStatus(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("status", flag.ContinueOnError)
	fs.SetOutput(stderr)
	cfgPath := configFlag(fs, "lazysnap serve's TOML configuration file (to find its status socket)")
	addr := fs.String("address", "", "status endpoint: a unix socket path or an http:// URL (default: "+statusSocketName+" beside the configured gRPC socket)")
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
		cfg, err := loadServeConfig(configPath(fs, *cfgPath))
		if err != nil {
			return err
		}
		target = cfg.statusSocket()
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
	return writeStatus(stdout, rep)
}

// writeStatus prints a status report for people: a table of layers by
// image, then cache, registry and fallback totals.
func writeStatus(w io.Writer, rep ops.Report) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "IMAGE\tLAYER\tFETCHED\tBYTES\tSTATE\tERRORS")
	n := 0
	for _, img := range rep.Images {
		ref := img.Ref
		if ref == "" {
			ref = "(unknown)"
		}
		for _, l := range img.Layers {
			n++
			if l.State == ops.StateFallback {
				fmt.Fprintf(tw, "%s\t%s\t-\t-\t%s (%s)\t-\n", ref, shortDigest(l.Digest), l.State, l.FallbackReason)
				continue
			}
			state := l.State
			if l.Verification != "" {
				state += ", " + l.Verification
			}
			if l.Profile != "" {
				state += " (profile: " + l.Profile + ")"
			}
			fmt.Fprintf(tw, "%s\t%s\t%.1f%%\t%s\t%s\t%d\n", ref, shortDigest(l.Digest), l.FetchedPercent,
				humanBytes(l.FetchedBytes), state, l.Errors)
		}
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if n == 0 {
		fmt.Fprintln(w, "(no lazy layers)")
	}
	for _, img := range rep.Images {
		for _, l := range img.Layers {
			if l.State != ops.StateFallback && l.Error != "" {
				fmt.Fprintf(w, "layer %s (%s): last error: %s\n", shortDigest(l.Digest), l.Format, l.Error)
			}
		}
	}
	fmt.Fprintln(w)
	if c := rep.Cache; c != nil {
		disk := "off"
		if c.DiskMaxBytes > 0 {
			disk = fmt.Sprintf("%s in %d entries (limit %s)", humanBytes(c.DiskBytes), c.DiskEntries, humanBytes(c.DiskMaxBytes))
		}
		fmt.Fprintf(w, "cache: disk %s, memory %s in %d entries; %d hits (%d from memory), %d misses, %d evictions",
			disk, humanBytes(c.MemoryBytes), c.MemEntries, c.Hits, c.MemoryHits, c.Misses, c.Evictions)
		if c.Corrupt > 0 || c.WriteErrors > 0 {
			fmt.Fprintf(w, ", %d corrupt, %d write errors", c.Corrupt, c.WriteErrors)
		}
		fmt.Fprintln(w)
	}
	for _, h := range slices.Sorted(maps.Keys(rep.Registries)) {
		r := rep.Registries[h]
		fmt.Fprintf(w, "registry %s: %d requests, %s received\n", h, r.Requests, humanBytes(r.Bytes))
	}
	if s := nonZero(rep.RegistryErrors); s != "" {
		fmt.Fprintf(w, "registry errors: %s\n", s)
	}
	if v := rep.Verification; v != nil {
		fmt.Fprintf(w, "verification: %d verified, %d bad, %d errors; %s from the cache, %s fetched\n",
			v.Verified, v.Bad, v.Errors, humanBytes(v.CachedBytes), humanBytes(v.FetchedBytes))
	}
	for _, b := range rep.BadLayers {
		which := b.Digest
		if b.Index != "" {
			which += " with index " + b.Index
		}
		fmt.Fprintf(w, "BAD LAYER %s (since %s; new mounts fall back): %s\n", which, b.Time.Format(time.RFC3339), b.Reason)
	}
	if len(rep.PullAuths) > 0 {
		fmt.Fprintf(w, "CRI pull auths held for: %s\n", strings.Join(rep.PullAuths, ", "))
	}
	if fm := rep.FuseManager; fm != nil {
		if fm.Error != "" {
			fmt.Fprintf(w, "fuse manager %s: NOT ANSWERING: %s\n", fm.Address, fm.Error)
		} else {
			fmt.Fprintf(w, "fuse manager: pid %d, version %s, %s\n", fm.PID, fm.Version, fm.Address)
		}
	}
	if sn := rep.Snapshotter; sn != nil {
		fmt.Fprintf(w, "snapshotter: %d lazy mounts, %d restored, %d restore failures, %d remounts, %d unavailable\n",
			sn.RemoteMounts, sn.Restored, sn.RestoreFailures, sn.Remounts, sn.Unavailable)
		fb := map[string]int64{}
		for k, v := range sn.Fallbacks {
			fb[k] = int64(v)
		}
		if s := nonZero(fb); s != "" {
			fmt.Fprintf(w, "fallbacks: %s\n", s)
		}
	}
	return nil
}

// nonZero formats the non-zero counts of m as "a 1, b 2", sorted by name.
func nonZero(m map[string]int64) string {
	var parts []string
	for _, k := range slices.Sorted(maps.Keys(m)) {
		if m[k] != 0 {
			parts = append(parts, fmt.Sprintf("%s %d", k, m[k]))
		}
	}
	return strings.Join(parts, ", ")
}

// shortDigest shortens "sha256:<64 hex>" to "sha256:<12 hex>".
func shortDigest(d string) string {
	alg, hex, ok := strings.Cut(d, ":")
	if !ok || len(hex) <= 12 {
		return d
	}
	return alg + ":" + hex[:12]
}

// humanBytes formats n in binary units: "0 B", "512 B", "1.5 KiB", "3.2 MiB".
func humanBytes(n int64) string {
	if n < 1024 {
		return fmt.Sprintf("%d B", n)
	}
	v := float64(n)
	for _, unit := range []string{"KiB", "MiB", "GiB", "TiB"} {
		v /= 1024
		if v < 1024 || unit == "TiB" {
			return fmt.Sprintf("%.1f %s", v, unit)
		}
	}
	panic("unreachable")
}
