// Package ops is what an operator sees of a lazysnap daemon: the status
// report (GET /status, `lazysnap status`) and the Prometheus metrics
// (GET /metrics), both read from the components' own counters.
//
// # Concepts
//
// Sources names where the counters come from: the fetcher (registries,
// errors, chunk cache), the lazy mounts (remote.FS.Layers) and the
// snapshotter (its Stats and its Fallbacks). A nil source contributes
// nothing, so that each process reports what it has: a fuse manager the
// layers and registries, serve the snapshotter. Server assembles a Report
// from them; Metrics turns them into metrics when scraped (nothing is
// counted twice, and metrics add nothing to the hot paths), apart from the
// histograms the components feed through hooks as things happen: read
// latency (ObserveRead, fetch.Options.OnReadLatency), FUSE operations and
// their errors (ObserveFUSE, fetch.Options.OnOp), registry requests
// (RegistryTransport, a RoundTripper for fetcher.Config.WrapTransport) and
// mounts (ObserveMount, snapshotter.WithOnMount).
//
// Handler serves both over HTTP (GET /metrics, and GET /status when given
// a report); Fetch reads /status back.
//
// A Report lists images, each with its layers: the mounted ones in the
// order containerd mounted them, with their fetch state (StatePrefetching,
// StateBackground, StateLazy, StateComplete), then the ones that fell back
// (StateFallback) with the snapshotter's reason, whatever step refused
// them.
//
// # Errors and concurrency
//
// Reading a Report or scraping never fails: a source that cannot answer
// is left out. Register fails only when a collector is registered twice.
// Every method is safe for concurrent use.
package ops
