package main

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"maps"
	"math"
	"net"
	"net/http"
	"path/filepath"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/lazysnap/lazysnap/remote"
	"github.com/lazysnap/lazysnap/snapshotter"
)

// The status endpoint. lazysnap serve always serves GET /status (JSON) and
// GET /metrics on a unix socket, status.sock beside the gRPC socket unless
// status_address says otherwise, and on metrics_address over TCP when that
// is set. `lazysnap status` finds the socket from the same configuration
// file, or is given --address.

// statusSocketName is the status socket's name beside the gRPC socket.
const statusSocketName = "status.sock"

// statusSocket is where serve listens for /status and /metrics.
func (c serveConfig) statusSocket() string {
	if c.StatusAddress != "" {
		return c.StatusAddress
	}
	return filepath.Join(filepath.Dir(c.Address), statusSocketName)
}

// statusReport is GET /status.
type statusReport struct {
	Version        string                    `json:"version"`
	Time           time.Time                 `json:"time"`
	Images         []imageStatus             `json:"images"`
	Cache          *cacheStatus              `json:"cache,omitempty"`
	Registries     map[string]registryStatus `json:"registries,omitempty"`
	RegistryErrors map[string]int64          `json:"registry_errors,omitempty"`
	Snapshotter    *snapshotterStatus        `json:"snapshotter,omitempty"`
	FuseManager    *fuseManagerStatus        `json:"fuse_manager,omitempty"`
}

// fuseManagerStatus is the fuse manager serving the layers, when serve
// uses one (fusemanager.go).
type fuseManagerStatus struct {
	Address string `json:"address"`
	PID     int    `json:"pid,omitempty"`
	Version string `json:"version,omitempty"`
	Error   string `json:"error,omitempty"` // why it did not answer
}

type imageStatus struct {
	Ref    string        `json:"ref"`
	Layers []layerStatus `json:"layers"`
}

// Layer states.
const (
	statePrefetching = "prefetching" // fetching the prioritized files
	stateBackground  = "background"  // fetching the rest in the background
	stateLazy        = "lazy"        // fetching on demand only (background fetch off)
	stateComplete    = "complete"    // every chunk present
	stateFallback    = "fallback"    // the last mount failed: pulled the ordinary way
)

type layerStatus struct {
	Digest           string  `json:"digest"`
	State            string  `json:"state"`
	Mountpoint       string  `json:"mountpoint,omitempty"`
	Chunks           int     `json:"chunks"`
	ChunksPresent    int     `json:"chunks_present"`
	FetchedPercent   float64 `json:"fetched_percent"`
	FetchedBytes     int64   `json:"fetched_bytes"`
	Requests         int64   `json:"requests"`
	Reads            int64   `json:"reads"`
	PassthroughOpens int64   `json:"passthrough_opens"`
	Errors           int64   `json:"errors"`
	CacheBytes       int64   `json:"cache_bytes"`
	PrefetchDone     bool    `json:"prefetch_done"`
	BackgroundDone   bool    `json:"background_done"`
	FallbackReason   string  `json:"fallback_reason,omitempty"`
	Error            string  `json:"error,omitempty"`

	ref string // the image
	seq int    // the order of mounts
}

type cacheStatus struct {
	DiskBytes    int64 `json:"disk_bytes"`
	DiskEntries  int64 `json:"disk_entries"`
	DiskMaxBytes int64 `json:"disk_max_bytes"`
	MemoryBytes  int64 `json:"memory_bytes"`
	MemEntries   int64 `json:"memory_entries"`
	Hits         int64 `json:"hits"`
	MemoryHits   int64 `json:"memory_hits"`
	Misses       int64 `json:"misses"`
	Evictions    int64 `json:"evictions"`
	Corrupt      int64 `json:"corrupt"`
	WriteErrors  int64 `json:"write_errors"`
}

type registryStatus struct {
	Requests int64 `json:"requests"`
	Bytes    int64 `json:"bytes"`
}

type snapshotterStatus struct {
	RemoteMounts    uint64            `json:"remote_mounts"`
	Fallbacks       map[string]uint64 `json:"fallbacks"`
	Restored        uint64            `json:"restored"`
	RestoreFailures uint64            `json:"restore_failures"`
	Remounts        uint64            `json:"remounts"`
	Unavailable     int               `json:"unavailable"`
}

// statusServer assembles statusReports.
type statusServer struct {
	fs                     *remote.FS
	src                    statsSources
	noPrefetch, background bool
}

func (s *statusServer) report(ctx context.Context) statusReport {
	var layers []layerStatus
	var mls []remote.LayerInfo
	if s.src.Layers != nil {
		mls = s.src.Layers()
	}
	for _, m := range mls {
		ls := layerStatus{Digest: m.Digest.String(), Mountpoint: m.Mountpoint, ref: m.Ref, seq: m.Seq}
		fillLayer(&ls, m, s.noPrefetch, s.background)
		if u, err := s.fs.Usage(ctx, m.Mountpoint); err == nil {
			ls.CacheBytes = u.Size
		}
		layers = append(layers, ls)
	}
	rep := statusReport{Version: version, Time: time.Now().UTC(), Images: groupImages(layers)}
	if s.src.Fallbacks != nil {
		rep.Images = withFallbacks(rep.Images, s.src.Fallbacks())
	}
	if s.src.Cache != nil {
		c := s.src.Cache()
		rep.Cache = &cacheStatus{DiskBytes: c.Bytes, DiskEntries: c.Entries, DiskMaxBytes: c.MaxBytes,
			MemoryBytes: c.MemBytes, MemEntries: c.MemEntries, Hits: c.Hits, MemoryHits: c.MemHits,
			Misses: c.Misses, Evictions: c.Evictions, Corrupt: c.Corrupt, WriteErrors: c.WriteErrs}
	}
	if s.src.Registries != nil {
		rep.Registries = map[string]registryStatus{}
		for h, st := range s.src.Registries() {
			rep.Registries[h] = registryStatus{Requests: st.Requests, Bytes: st.Bytes}
		}
	}
	if s.src.RegistryErrors != nil {
		rep.RegistryErrors = s.src.RegistryErrors()
	}
	if s.src.Snapshotter != nil {
		rep.Snapshotter = snapshotterStatusOf(s.src.Snapshotter())
	}
	return rep
}

func snapshotterStatusOf(st snapshotter.Stats) *snapshotterStatus {
	ss := &snapshotterStatus{RemoteMounts: st.RemoteMounts, Fallbacks: map[string]uint64{},
		Restored: st.Restored, RestoreFailures: st.RestoreFailures, Remounts: st.Remounts, Unavailable: st.Unavailable}
	for r, n := range st.Fallbacks {
		ss.Fallbacks[string(r)] = n
	}
	return ss
}

// fillLayer sets a mounted layer's counters and state.
func fillLayer(ls *layerStatus, m remote.LayerInfo, noPrefetch, background bool) {
	s := m.Stats
	ls.Chunks, ls.ChunksPresent = s.Chunks, s.ChunksPresent
	ls.FetchedPercent = 100
	if s.Chunks > 0 {
		ls.FetchedPercent = math.Round(1000*float64(s.ChunksPresent)/float64(s.Chunks)) / 10
		if ls.FetchedPercent == 100 && s.ChunksPresent < s.Chunks {
			ls.FetchedPercent = 99.9
		}
		if ls.FetchedPercent == 0 && s.ChunksPresent > 0 {
			ls.FetchedPercent = 0.1
		}
	}
	ls.FetchedBytes, ls.Requests, ls.Reads = s.FetchedBytes, s.Requests, s.FuseReads
	ls.PassthroughOpens, ls.Errors = s.PassthroughOpens, s.Errors
	ls.PrefetchDone, ls.BackgroundDone = s.PrefetchDone, s.BackgroundDone
	switch {
	case s.ChunksPresent >= s.Chunks:
		ls.State = stateComplete
	case !s.PrefetchDone && !noPrefetch:
		ls.State = statePrefetching
	case background && !s.BackgroundDone:
		ls.State = stateBackground
	default:
		ls.State = stateLazy
	}
}

// groupImages groups layers by image reference, images and layers in the
// order they were mounted.
func groupImages(layers []layerStatus) []imageStatus {
	slices.SortStableFunc(layers, func(a, b layerStatus) int {
		return cmp.Or(cmp.Compare(a.seq, b.seq), cmp.Compare(a.Digest, b.Digest), cmp.Compare(a.Mountpoint, b.Mountpoint))
	})
	images := []imageStatus{}
	at := map[string]int{}
	for _, l := range layers {
		i, ok := at[l.ref]
		if !ok {
			i = len(images)
			at[l.ref] = i
			images = append(images, imageStatus{Ref: l.ref})
		}
		images[i].Layers = append(images[i].Layers, l)
	}
	return images
}

// withFallbacks adds the layers that fell back, each after the mounted
// layers of its image (a reference of its own when no layer of it is
// mounted).
func withFallbacks(images []imageStatus, fbs []snapshotter.Fallback) []imageStatus {
	at := map[string]int{}
	for i, img := range images {
		at[img.Ref] = i
	}
	for _, f := range fbs {
		i, ok := at[f.Ref]
		if !ok {
			i = len(images)
			at[f.Ref] = i
			images = append(images, imageStatus{Ref: f.Ref})
		}
		images[i].Layers = append(images[i].Layers, layerStatus{Digest: f.Digest, State: stateFallback,
			FallbackReason: string(f.Reason), Error: f.Err})
	}
	return images
}

// statusReporter assembles GET /status: a statusServer, or a
// managerStatus when a fuse manager serves the layers.
type statusReporter interface {
	report(ctx context.Context) statusReport
}

// opsHandler serves /metrics and /status.
func opsHandler(m *metrics, st statusReporter) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", m.handler())
	mux.HandleFunc("GET /status", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		_ = enc.Encode(st.report(r.Context()))
	})
	return mux
}

// runStatus is `lazysnap status`.
func runStatus(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("status", flag.ContinueOnError)
	fs.SetOutput(stderr)
	cfgPath := fs.String("config", "", "lazysnap serve's TOML configuration file (to find its status socket)")
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
		cfg, err := loadServeConfig(*cfgPath)
		if err != nil {
			return err
		}
		target = cfg.statusSocket()
	}
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	body, err := fetchStatus(ctx, target)
	if err != nil {
		return err
	}
	var rep statusReport
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

// fetchStatus GETs /status from a unix socket path or an http(s) URL.
func fetchStatus(ctx context.Context, target string) ([]byte, error) {
	client := &http.Client{}
	url := strings.TrimSuffix(target, "/") + "/status"
	if !strings.HasPrefix(target, "http://") && !strings.HasPrefix(target, "https://") {
		client.Transport = &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", target)
		}}
		url = "http://lazysnap/status"
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	resp, err := client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("is lazysnap serve running? %w", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("%s: %s: %s", target, resp.Status, bytes.TrimSpace(body[:min(len(body), 200)]))
	}
	return body, nil
}

// writeStatus prints a status report for people: a table of layers by
// image, then cache, registry and fallback totals.
func writeStatus(w io.Writer, rep statusReport) error {
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
			if l.State == stateFallback {
				fmt.Fprintf(tw, "%s\t%s\t-\t-\t%s (%s)\t-\n", ref, shortDigest(l.Digest), l.State, l.FallbackReason)
				continue
			}
			fmt.Fprintf(tw, "%s\t%s\t%.1f%%\t%s\t%s\t%d\n", ref, shortDigest(l.Digest), l.FetchedPercent,
				humanBytes(l.FetchedBytes), l.State, l.Errors)
		}
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if n == 0 {
		fmt.Fprintln(w, "(no lazy layers)")
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
