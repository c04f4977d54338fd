package ops

import (
	"cmp"
	"context"
	"math"
	"slices"
	"time"

	"github.com/lazysnap/lazysnap/remote"
	"github.com/lazysnap/lazysnap/snapshotter"
)

// Report is GET /status.
type Report struct {
	Version        string              `json:"version"`
	Time           time.Time           `json:"time"`
	Images         []Image             `json:"images"`
	Cache          *Cache              `json:"cache,omitempty"`
	Registries     map[string]Registry `json:"registries,omitempty"`
	RegistryErrors map[string]int64    `json:"registry_errors,omitempty"`
	Snapshotter    *SnapshotterStatus  `json:"snapshotter,omitempty"`
	// BadLayers are the blobs verification found other than their digest
	// (or their index) names: new mounts of them fall back.
	BadLayers    []BadLayer    `json:"bad_layers,omitempty"`
	Verification *Verification `json:"verification,omitempty"`
	FuseManager  *FuseManager  `json:"fuse_manager,omitempty"`
	// PullAuths names the image repositories whose last CRI pull's auth
	// is held in memory for their lazy fetches (never the auths).
	PullAuths []string `json:"pull_auths,omitempty"`
}

// FuseManager is the fuse manager serving the layers, when serve
// uses one (fusemanager.go).
type FuseManager struct {
	Address string `json:"address"`
	PID     int    `json:"pid,omitempty"`
	Version string `json:"version,omitempty"`
	Error   string `json:"error,omitempty"` // why it did not answer
}

type Image struct {
	Ref    string  `json:"ref"`
	Layers []Layer `json:"layers"`
}

// Layer states.
const (
	StatePrefetching = "prefetching" // fetching the prioritized files
	StateBackground  = "background"  // fetching the rest in the background
	StateLazy        = "lazy"        // fetching on demand only (background fetch off)
	StateComplete    = "complete"    // every chunk present
	StateFallback    = "fallback"    // the last mount failed: pulled the ordinary way
	StatePulling     = "pulling"     // not lazy: lazysnap is pulling it at line rate
	StatePulled      = "pulled"      // not lazy: pulled by lazysnap at line rate
)

// Layer paths: how a layer reached this node.
const (
	PathLazy       = "lazy"       // mounted lazily (Format says which format)
	PathLineRate   = "line-rate"  // not lazy: pulled by lazysnap at line rate
	PathContainerd = "containerd" // not lazy: pulled by containerd
	PathFailed     = "failed"     // not lazy: lazysnap's pull failed (Error says why)
)

type Layer struct {
	Digest           string  `json:"digest"`
	State            string  `json:"state"`
	Format           string  `json:"format,omitempty"` // of a mounted layer: estargz, soci
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
	// Path is how the layer reached the node: PathLazy, PathLineRate,
	// PathContainerd or PathFailed.
	Path string `json:"path"`
	// NotLazy is why a layer pulled at line rate could not be lazy.
	NotLazy string `json:"not_lazy,omitempty"`
	// PullSeconds is how long its line-rate pull took (0 while it runs);
	// Ztoc whether that pull kept the layer's zTOC ("kept", or why not).
	PullSeconds float64 `json:"pull_seconds,omitempty"`
	Ztoc        string  `json:"ztoc,omitempty"`
	// Stored says whether that pull also stored the blob in containerd's
	// content store ("stored", or why not; [pull] content_store).
	Stored string `json:"stored,omitempty"`
	// Published says where that pull's zTOC was published as a SOCI
	// index for other nodes ([soci] publish_repository), or why not.
	Published string `json:"published,omitempty"`
	// Ahead: the blob was downloaded ahead, while a layer below it was
	// pulled.
	Ahead bool `json:"downloaded_ahead,omitempty"`
	// Error is why a layer fell back, or a mounted layer's last failed read.
	Error string `json:"error,omitempty"`
	// Verification is where the check of the complete layer against its
	// digest stands (remote.LayerInfo.Verification: "pending",
	// "verifying", "verified", "bad: REASON", "unverified: ERROR");
	// empty with verification off.
	Verification string `json:"verification,omitempty"`
	// Profile is what the image's learned prefetch profile did for the
	// layer (remote.LayerInfo.ProfileState: "recording", "prefetched from
	// registry", "ignored: REASON", ...); empty with profiles off.
	Profile string `json:"profile,omitempty"`

	ref string // the image
	seq int    // the order of mounts
}

type Cache struct {
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

// BadLayer is a blob marked bad (remote.BadLayer).
type BadLayer struct {
	Digest string    `json:"digest"`
	Index  string    `json:"index,omitempty"` // only this index of the blob is refused
	Reason string    `json:"reason"`
	Time   time.Time `json:"time"`
}

// Verification counts the verifications of complete layers
// (remote.VerifyStats).
type Verification struct {
	Verified     int64 `json:"verified"`
	Bad          int64 `json:"bad"`
	Errors       int64 `json:"errors"`
	CachedBytes  int64 `json:"cached_bytes"`  // read from the chunk cache
	FetchedBytes int64 `json:"fetched_bytes"` // fetched from the registry
}

type Registry struct {
	Requests int64 `json:"requests"`
	Bytes    int64 `json:"bytes"`
}

type SnapshotterStatus struct {
	RemoteMounts    uint64            `json:"remote_mounts"`
	LineRatePulls   uint64            `json:"line_rate_pulls"`
	LineRateBytes   uint64            `json:"line_rate_pulled_bytes"`
	Fallbacks       map[string]uint64 `json:"fallbacks"`
	Restored        uint64            `json:"restored"`
	RestoreFailures uint64            `json:"restore_failures"`
	Remounts        uint64            `json:"remounts"`
	Unavailable     int               `json:"unavailable"`
}

// Server assembles statusReports.
type Server struct {
	FS      *remote.FS // for each layer's disk usage
	Src     Sources
	Version string // lazysnap's
	// NoPrefetch and Background are the layers' fetch configuration,
	// which tells their states apart.
	NoPrefetch, Background bool
}

// Report assembles the status report.
func (s *Server) Report(ctx context.Context) Report {
	var layers []Layer
	var mls []remote.LayerInfo
	if s.Src.Layers != nil {
		mls = s.Src.Layers()
	}
	for _, m := range mls {
		ls := Layer{Digest: m.Digest.String(), Mountpoint: m.Mountpoint, Format: m.Format, Error: m.LastError, Path: PathLazy, ref: m.Ref, seq: m.Seq}
		fillLayer(&ls, m, s.NoPrefetch, s.Background)
		if u, err := s.FS.Usage(ctx, m.Mountpoint); err == nil {
			ls.CacheBytes = u.Size
		}
		layers = append(layers, ls)
	}
	rep := Report{Version: s.Version, Time: time.Now().UTC(), Images: groupImages(layers)}
	if s.Src.Pulls != nil {
		rep.Images = WithPulls(rep.Images, s.Src.Pulls(), mls)
	}
	if s.Src.Fallbacks != nil {
		rep.Images = WithFallbacks(rep.Images, s.Src.Fallbacks())
	}
	if s.Src.Cache != nil {
		c := s.Src.Cache()
		rep.Cache = &Cache{DiskBytes: c.Bytes, DiskEntries: c.Entries, DiskMaxBytes: c.MaxBytes,
			MemoryBytes: c.MemBytes, MemEntries: c.MemEntries, Hits: c.Hits, MemoryHits: c.MemHits,
			Misses: c.Misses, Evictions: c.Evictions, Corrupt: c.Corrupt, WriteErrors: c.WriteErrs}
	}
	if s.Src.Registries != nil {
		rep.Registries = map[string]Registry{}
		for h, st := range s.Src.Registries() {
			rep.Registries[h] = Registry{Requests: st.Requests, Bytes: st.Bytes}
		}
	}
	if s.Src.RegistryErrors != nil {
		rep.RegistryErrors = s.Src.RegistryErrors()
	}
	if s.Src.Snapshotter != nil {
		rep.Snapshotter = SnapshotterStatusOf(s.Src.Snapshotter())
	}
	if s.Src.Verify != nil {
		v := s.Src.Verify()
		rep.Verification = &Verification{Verified: v.Verified, Bad: v.Bad, Errors: v.Errors, CachedBytes: v.CachedBytes, FetchedBytes: v.FetchedBytes}
	}
	if s.Src.BadLayers != nil {
		for _, b := range s.Src.BadLayers() {
			rep.BadLayers = append(rep.BadLayers, BadLayer{Digest: b.Digest.String(), Index: b.Index.String(), Reason: b.Reason, Time: b.Time})
		}
	}
	if s.Src.PullAuths != nil {
		rep.PullAuths = s.Src.PullAuths()
	}
	return rep
}

func SnapshotterStatusOf(st snapshotter.Stats) *SnapshotterStatus {
	ss := &SnapshotterStatus{RemoteMounts: st.RemoteMounts, LineRatePulls: st.Pulls, LineRateBytes: st.PulledBytes, Fallbacks: map[string]uint64{},
		Restored: st.Restored, RestoreFailures: st.RestoreFailures, Remounts: st.Remounts, Unavailable: st.Unavailable}
	for r, n := range st.Fallbacks {
		ss.Fallbacks[string(r)] = n
	}
	return ss
}

// fillLayer sets a mounted layer's counters and state.
func fillLayer(ls *Layer, m remote.LayerInfo, noPrefetch, background bool) {
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
	ls.Profile = m.ProfileState
	ls.Verification = m.Verification
	switch {
	case s.ChunksPresent >= s.Chunks:
		ls.State = StateComplete
	case !s.PrefetchDone && !noPrefetch:
		ls.State = StatePrefetching
	case background && !s.BackgroundDone:
		ls.State = StateBackground
	default:
		ls.State = StateLazy
	}
}

// groupImages groups layers by image reference, images and layers in the
// order they were mounted.
func groupImages(layers []Layer) []Image {
	slices.SortStableFunc(layers, func(a, b Layer) int {
		return cmp.Or(cmp.Compare(a.seq, b.seq), cmp.Compare(a.Digest, b.Digest), cmp.Compare(a.Mountpoint, b.Mountpoint))
	})
	images := []Image{}
	at := map[string]int{}
	for _, l := range layers {
		i, ok := at[l.ref]
		if !ok {
			i = len(images)
			at[l.ref] = i
			images = append(images, Image{Ref: l.ref})
		}
		images[i].Layers = append(images[i].Layers, l)
	}
	return images
}

// WithFallbacks adds the layers that fell back, each after the mounted
// layers of its image (a reference of its own when no layer of it is
// mounted).
func WithFallbacks(images []Image, fbs []snapshotter.Fallback) []Image {
	at := map[string]int{}
	for i, img := range images {
		at[img.Ref] = i
	}
	for _, f := range fbs {
		i, ok := at[f.Ref]
		if !ok {
			i = len(images)
			at[f.Ref] = i
			images = append(images, Image{Ref: f.Ref})
		}
		path := PathContainerd
		if f.Reason == snapshotter.ReasonPullFailed {
			path = PathFailed
		}
		images[i].Layers = append(images[i].Layers, Layer{Digest: f.Digest, State: StateFallback,
			FallbackReason: string(f.Reason), Error: f.Err, Path: path})
	}
	return images
}

// WithPulls adds the layers pulled at line rate, in flight or done, each
// after the layers of its image; a failed pull is left to the
// snapshotter's fallbacks (WithFallbacks), and a pulled layer that is
// mounted lazily now (through the zTOC its pull kept) to its mount.
func WithPulls(images []Image, pulls []remote.PullInfo, mounted []remote.LayerInfo) []Image {
	at := map[string]int{}
	for i, img := range images {
		at[img.Ref] = i
	}
	lazy := map[string]bool{}
	for _, m := range mounted {
		lazy[m.Digest.String()] = true
	}
	for _, p := range pulls {
		if p.Err != "" || lazy[p.Digest.String()] {
			continue
		}
		i, ok := at[p.Ref]
		if !ok {
			i = len(images)
			at[p.Ref] = i
			images = append(images, Image{Ref: p.Ref})
		}
		l := Layer{Digest: p.Digest.String(), State: StatePulled, Path: PathLineRate, FallbackReason: string(snapshotter.ReasonNotLazy),
			NotLazy: p.NotLazy, FetchedBytes: p.Fetched, PullSeconds: p.Duration.Seconds(), Ztoc: p.Ztoc, Stored: p.Stored, Published: p.Published, Ahead: p.Spooled, FetchedPercent: 100}
		if p.Duration == 0 {
			l.State = StatePulling
			if p.Size > 0 {
				l.FetchedPercent = math.Floor(1000*float64(p.Fetched)/float64(p.Size)) / 10
			}
		}
		images[i].Layers = append(images[i].Layers, l)
	}
	return images
}
