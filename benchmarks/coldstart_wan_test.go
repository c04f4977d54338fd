package benchmarks

// The emulated WAN in front of the registry: a loopback reverse proxy that
// adds a round trip to every request and to every new connection, caps the
// response bytes of all connections together at the link's bandwidth, and
// records every request (when, what, how many bytes) so that a report can
// say where the time went.
//
// It does what internal/testenv/registry's WANProxy does, with one
// difference that matters for a benchmark: the bandwidth schedule keeps a
// little credit (wanBurst) when a sender wakes late, so that a single
// stream gets the configured rate. WANProxy restarts its schedule from
// "now" after every oversleep of its per-16-KiB sleeps, which on this
// machine caps one stream at about 56% of the configured bandwidth.

import (
	"context"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"
)

const (
	// wanChunk is the unit of bandwidth accounting.
	wanChunk = 16 << 10
	// wanBurst is how far the schedule may lag behind the clock before it
	// is reset: the sender's catch-up credit after oversleeping.
	wanBurst = 20 * time.Millisecond
)

// logEntry is one request as it crossed the link.
type logEntry struct {
	At       time.Duration // arrival, since the last reset
	Took     time.Duration // until the last response byte was sent
	Method   string
	Path     string
	Range    string
	Status   int
	Bytes    int64
	Kind     string
	InFlight int // requests in flight when it arrived, itself included
}

// wanStats are the link's counters since the last reset.
type wanStats struct {
	Requests, Bytes int64
}

// wan is the emulated link.
type wan struct {
	URL, Host string
	rtt       time.Duration
	bw        int64 // bytes per second, 0 = unlimited
	srv       *http.Server

	bwMu sync.Mutex
	next time.Time // when the link is free again

	mu      sync.Mutex
	start   time.Time
	entries []logEntry
	// inFlight counts the requests in flight by the run (reset) they
	// arrived in: one a killed client left hanging must not make every
	// request of later runs look concurrent.
	inFlight map[int]int
	gen      int
	arrived  int64
	bytes    int64
}

func startWAN(t *testing.T, target string, rtt time.Duration, bw int64) *wan {
	t.Helper()
	tu, err := url.Parse(target)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	w := &wan{Host: ln.Addr().String(), rtt: rtt, bw: bw, start: time.Now(), inFlight: map[int]int{}}
	w.URL = "http://" + w.Host
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.Proxy = nil
	tr.MaxIdleConnsPerHost = 64
	rp := &httputil.ReverseProxy{
		Rewrite:       func(pr *httputil.ProxyRequest) { pr.SetURL(tu); pr.Out.Host = tu.Host },
		Transport:     tr,
		FlushInterval: -1,
		ErrorLog:      log.New(io.Discard, "", 0),
		ErrorHandler:  func(rw http.ResponseWriter, r *http.Request, err error) { rw.WriteHeader(http.StatusBadGateway) },
	}
	w.srv = &http.Server{Handler: http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		w.mu.Lock()
		gen := w.gen
		w.inFlight[gen]++
		w.arrived++
		e := logEntry{At: time.Since(w.start), Method: r.Method, Path: r.URL.Path, Range: r.Header.Get("Range"),
			InFlight: w.inFlight[gen], Kind: requestKind(r)}
		w.mu.Unlock()
		tw := &throttledWriter{ResponseWriter: rw, w: w, status: http.StatusOK}
		if sleepCtx(r.Context(), rtt) == nil {
			rp.ServeHTTP(tw, r)
		}
		w.mu.Lock()
		if w.inFlight[gen]--; w.inFlight[gen] == 0 {
			delete(w.inFlight, gen)
		}
		if gen == w.gen {
			e.Took, e.Status, e.Bytes = time.Since(w.start)-e.At, tw.status, tw.n
			w.entries = append(w.entries, e)
		}
		w.mu.Unlock()
	}), ReadHeaderTimeout: 30 * time.Second}
	go w.srv.Serve(&wanListener{Listener: ln, rtt: rtt})
	t.Cleanup(func() { w.srv.Close() })
	return w
}

// reset zeroes the counters and the log and restarts the clock. It
// returns how many requests of earlier runs are still in flight (their
// clients were stopped); they are not counted in the new run.
func (w *wan) reset() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	left := 0
	for _, n := range w.inFlight {
		left += n
	}
	w.entries, w.start, w.bytes, w.arrived = nil, time.Now(), 0, 0
	w.gen++
	return left
}

// stats counts the requests received and the response bytes sent.
func (w *wan) stats() wanStats {
	w.mu.Lock()
	defer w.mu.Unlock()
	return wanStats{Requests: w.arrived, Bytes: w.bytes}
}

// log returns the requests answered since the reset, by arrival.
func (w *wan) log() []logEntry {
	w.mu.Lock()
	defer w.mu.Unlock()
	out := append([]logEntry(nil), w.entries...)
	sort.Slice(out, func(i, j int) bool { return out[i].At < out[j].At })
	return out
}

// throttle blocks until n more bytes may cross the link.
func (w *wan) throttle(n int) {
	if w.bw <= 0 {
		return
	}
	d := time.Duration(float64(n) / float64(w.bw) * float64(time.Second))
	w.bwMu.Lock()
	now := time.Now()
	if w.next.Before(now.Add(-wanBurst)) {
		w.next = now.Add(-wanBurst)
	}
	w.next = w.next.Add(d)
	wait := w.next.Sub(now)
	w.bwMu.Unlock()
	if wait > 0 {
		time.Sleep(wait)
	}
}

type throttledWriter struct {
	http.ResponseWriter
	w      *wan
	status int
	n      int64
}

func (t *throttledWriter) WriteHeader(code int) { t.status = code; t.ResponseWriter.WriteHeader(code) }

func (t *throttledWriter) Write(b []byte) (int, error) {
	written := 0
	for len(b) > 0 {
		n := min(len(b), wanChunk)
		t.w.throttle(n)
		m, err := t.ResponseWriter.Write(b[:n])
		written += m
		t.n += int64(m)
		t.w.mu.Lock()
		t.w.bytes += int64(m)
		t.w.mu.Unlock()
		if err != nil {
			return written, err
		}
		b = b[n:]
	}
	return written, nil
}

func (t *throttledWriter) Flush() {
	if f, ok := t.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

func (t *throttledWriter) Unwrap() http.ResponseWriter { return t.ResponseWriter }

// wanListener delays the first read of every connection by a round trip
// (the TCP handshake).
type wanListener struct {
	net.Listener
	rtt time.Duration
}

func (l *wanListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return &wanConn{Conn: c, rtt: l.rtt}, nil
}

type wanConn struct {
	net.Conn
	rtt  time.Duration
	once sync.Once
}

func (c *wanConn) Read(b []byte) (int, error) {
	c.once.Do(func() { time.Sleep(c.rtt) })
	return c.Conn.Read(b)
}

func sleepCtx(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// requestKind classifies a registry request.
func requestKind(r *http.Request) string {
	p := r.URL.Path
	switch {
	case p == "/v2/" || p == "/v2":
		return "ping"
	case strings.Contains(p, "/manifests/"):
		return strings.ToLower(r.Method) + " manifest"
	case strings.Contains(p, "/blobs/") && r.Method == http.MethodHead:
		return "head blob"
	case strings.Contains(p, "/blobs/") && r.Header.Get("Range") != "":
		return "range read"
	case strings.Contains(p, "/blobs/"):
		return "whole blob"
	}
	return strings.ToLower(r.Method) + " other"
}

// summarize counts requests and bytes by kind, e.g.
// "get manifest 1 (0.00 MB), range read 107 (4.90 MB), whole blob 1".
func summarize(entries []logEntry) string {
	type agg struct {
		n     int
		bytes int64
	}
	by := map[string]*agg{}
	var kinds []string
	for _, e := range entries {
		a := by[e.Kind]
		if a == nil {
			a = &agg{}
			by[e.Kind] = a
			kinds = append(kinds, e.Kind)
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
func serialRequests(entries []logEntry) int {
	n := 0
	for _, e := range entries {
		if e.InFlight == 1 {
			n++
		}
	}
	return n
}

// writeLog writes one line per request, for a closer look at one run.
func writeLog(path string, entries []logEntry) error {
	var b strings.Builder
	fmt.Fprintf(&b, "%9s %9s %3s %-6s %-13s %10s %4s %s\n", "at_ms", "took_ms", "par", "method", "kind", "bytes", "code", "path range")
	for _, e := range entries {
		fmt.Fprintf(&b, "%9.1f %9.1f %3d %-6s %-13s %10d %4d %s %s\n", float64(e.At.Microseconds())/1000, float64(e.Took.Microseconds())/1000,
			e.InFlight, e.Method, e.Kind, e.Bytes, e.Status, e.Path, e.Range)
	}
	return os.WriteFile(path, []byte(b.String()), 0o644)
}
