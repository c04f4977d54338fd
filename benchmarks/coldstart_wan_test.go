package benchmarks

// Reading the emulated WAN's request log (internal/testenv/registry's
// WANProxy: a round trip added to every request and every new connection,
// the response bytes of all connections capped together at the link's
// bandwidth, every request logged) for the report: where the time and the
// bytes went.

import (
	"fmt"
	"net/http"
	"os"
	"sort"
	"strings"

	"github.com/lazysnap/lazysnap/internal/testenv/registry"
)

// requestKind classifies a registry request.
func requestKind(e registry.WANRequest) string {
	p := e.Path
	switch {
	case p == "/v2/" || p == "/v2":
		return "ping"
	case strings.Contains(p, "/manifests/"):
		return strings.ToLower(e.Method) + " manifest"
	case strings.Contains(p, "/blobs/") && e.Method == http.MethodHead:
		return "head blob"
	case strings.Contains(p, "/blobs/") && e.Range != "":
		return "range read"
	case strings.Contains(p, "/blobs/"):
		return "whole blob"
	}
	return strings.ToLower(e.Method) + " other"
}

// summarize counts requests and bytes by kind, e.g.
// "get manifest 1 (0.00 MB), range read 107 (4.90 MB), whole blob 1".
func summarize(entries []registry.WANRequest) string {
	type agg struct {
		n     int
		bytes int64
	}
	by := map[string]*agg{}
	var kinds []string
	for _, e := range entries {
		k := requestKind(e)
		a := by[k]
		if a == nil {
			a = &agg{}
			by[k] = a
			kinds = append(kinds, k)
		}
		a.n++
		a.bytes += e.Bytes
	}
	sort.Strings(kinds)
	var parts []string
	for _, k := range kinds {
		s := fmt.Sprintf("%s %d", k, by[k].n)
		if by[k].bytes > 0 {
			s += fmt.Sprintf(" (%.2f MB)", float64(by[k].bytes)/1e6)
		}
		parts = append(parts, s)
	}
	return strings.Join(parts, ", ")
}

// serialRequests counts the requests that arrived while no other was in
// flight: round trips spent one after another.
func serialRequests(entries []registry.WANRequest) int {
	n := 0
	for _, e := range entries {
		if e.InFlight == 1 {
			n++
		}
	}
	return n
}

// writeLog writes one line per request, for a closer look at one run.
func writeLog(path string, entries []registry.WANRequest) error {
	var b strings.Builder
	fmt.Fprintf(&b, "%9s %9s %3s %-6s %-13s %10s %4s %s\n", "at_ms", "took_ms", "par", "method", "kind", "bytes", "code", "path range")
	for _, e := range entries {
		fmt.Fprintf(&b, "%9.1f %9.1f %3d %-6s %-13s %10d %4d %s %s\n", float64(e.At.Microseconds())/1000, float64(e.Took.Microseconds())/1000,
			e.InFlight, e.Method, requestKind(e), e.Bytes, e.Status, e.Path, e.Range)
	}
	return os.WriteFile(path, []byte(b.String()), 0o644)
}
