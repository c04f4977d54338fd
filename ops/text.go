package ops

import (
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"
	"text/tabwriter"
	"time"
)

// WriteText prints a status report for people (`lazysnap status`): a
// table of layers by image, then cache, registry and fallback totals.
func WriteText(w io.Writer, rep Report) error {
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
			if l.State == StateFallback {
				fmt.Fprintf(tw, "%s\t%s\t-\t-\t%s (%s)\t-\n", ref, ShortDigest(l.Digest), l.State, l.FallbackReason)
				continue
			}
			if l.Path == PathLineRate {
				state := l.State + " at line rate"
				if l.PullSeconds > 0 {
					state += fmt.Sprintf(" in %.1fs", l.PullSeconds)
				}
				if l.Ztoc != "" {
					state += ", zTOC " + l.Ztoc
				}
				if l.Stored != "" {
					state += ", content store: " + l.Stored
				}
				if l.Published != "" {
					state += ", " + l.Published
				}
				fmt.Fprintf(tw, "%s\t%s\t%.1f%%\t%s\t%s (not lazy)\t-\n", ref, ShortDigest(l.Digest), l.FetchedPercent, HumanBytes(l.FetchedBytes), state)
				continue
			}
			state := l.State
			if l.Format != "" {
				state = l.Format + ", " + state
			}
			if l.Verification != "" {
				state += ", " + l.Verification
			}
			if l.Profile != "" {
				state += " (profile: " + l.Profile + ")"
			}
			fmt.Fprintf(tw, "%s\t%s\t%.1f%%\t%s\t%s\t%d\n", ref, ShortDigest(l.Digest), l.FetchedPercent,
				HumanBytes(l.FetchedBytes), state, l.Errors)
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
			if l.NotLazy != "" {
				fmt.Fprintf(w, "layer %s: not lazy: %s\n", ShortDigest(l.Digest), l.NotLazy)
			}
			if l.State != StateFallback && l.Error != "" {
				fmt.Fprintf(w, "layer %s (%s): last error: %s\n", ShortDigest(l.Digest), l.Format, l.Error)
			}
		}
	}
	fmt.Fprintln(w)
	if c := rep.Cache; c != nil {
		disk := "off"
		if c.DiskMaxBytes > 0 {
			disk = fmt.Sprintf("%s in %d entries (limit %s)", HumanBytes(c.DiskBytes), c.DiskEntries, HumanBytes(c.DiskMaxBytes))
		}
		fmt.Fprintf(w, "cache: disk %s, memory %s in %d entries; %d hits (%d from memory), %d misses, %d evictions",
			disk, HumanBytes(c.MemoryBytes), c.MemEntries, c.Hits, c.MemoryHits, c.Misses, c.Evictions)
		if c.Corrupt > 0 || c.WriteErrors > 0 {
			fmt.Fprintf(w, ", %d corrupt, %d write errors", c.Corrupt, c.WriteErrors)
		}
		fmt.Fprintln(w)
	}
	for _, h := range slices.Sorted(maps.Keys(rep.Registries)) {
		r := rep.Registries[h]
		fmt.Fprintf(w, "registry %s: %d requests, %s received\n", h, r.Requests, HumanBytes(r.Bytes))
	}
	if s := nonZero(rep.RegistryErrors); s != "" {
		fmt.Fprintf(w, "registry errors: %s\n", s)
	}
	if v := rep.Verification; v != nil {
		fmt.Fprintf(w, "verification: %d verified, %d bad, %d errors; %s from the cache, %s fetched\n",
			v.Verified, v.Bad, v.Errors, HumanBytes(v.CachedBytes), HumanBytes(v.FetchedBytes))
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
		fmt.Fprintf(w, "snapshotter: %d lazy mounts, %d line-rate pulls (%s), %d restored, %d restore failures, %d remounts, %d unavailable\n",
			sn.RemoteMounts, sn.LineRatePulls, HumanBytes(int64(sn.LineRateBytes)), sn.Restored, sn.RestoreFailures, sn.Remounts, sn.Unavailable)
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

// ShortDigest shortens "sha256:<64 hex>" to "sha256:<12 hex>".
func ShortDigest(d string) string {
	alg, hex, ok := strings.Cut(d, ":")
	if !ok || len(hex) <= 12 {
		return d
	}
	return alg + ":" + hex[:12]
}

// HumanBytes formats n in binary units: "0 B", "512 B", "1.5 KiB", "3.2 MiB".
func HumanBytes(n int64) string {
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
