package registry

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// WANOptions configures a WANProxy.
type WANOptions struct {
	// RTT is added once before each request is forwarded (the request's
	// round trip) and once on the first read of every new client
	// connection (the TCP handshake).
	RTT time.Duration
	// BandwidthBytesPerSec caps the response bytes of all connections
	// together (a shared link); 0 means unlimited.
	BandwidthBytesPerSec int64
	// Transport forwards to the target; nil uses a plain transport
	// (set one with the target's CA for an HTTPS target).
	Transport http.RoundTripper
	// Burst is how far the link may fall behind its schedule and still
	// catch up: the credit of a sender that wakes late (a token bucket of
	// Burst × bandwidth bytes). 0 means DefaultWANBurst.
	Burst time.Duration
	// Faults are the fault modes in force from the start (see SetFaults).
	Faults Faults
	// Now is the clock of the faults' time limits (Faults.RedirectTTL);
	// nil is time.Now. Tests set it to expire locations without waiting.
	Now func() time.Time
}

const (
	// DefaultWANBurst is WANOptions.Burst's default.
	DefaultWANBurst = 20 * time.Millisecond
	// wanChunk is the unit of bandwidth accounting: each response write
	// is paced in pieces of at most this many bytes.
	wanChunk = 16 << 10
	// wanCatchUp bounds how far behind its schedule a response under way
	// may catch up (see throttle).
	wanCatchUp = 250 * time.Millisecond
)

// WANStats are a WANProxy's counters.
type WANStats struct {
	Requests      int64 // requests received
	ResponseBytes int64 // response body bytes sent to clients
	Connections   int64 // client connections accepted
	// Fault counters (see Faults): blob requests held by Delay,
	// connections reset, redirects issued, expired locations refused.
	Delayed, Resets, Redirects, Expired int64
}

// WANRequest is one request as it crossed a WANProxy (see Log). Times are
// the proxy's clock, since its start or last Reset.
type WANRequest struct {
	At     time.Duration // arrival
	Took   time.Duration // from arrival until the handler returned (the last response byte sent)
	Method string
	Path   string
	Range  string // the Range header
	Status int    // 0 until the response header is written
	Bytes  int64  // response body bytes sent
	// FirstByte and LastByte are when the first and the last response
	// body byte were handed to the connection; zero if none was.
	FirstByte, LastByte time.Duration
	// InFlight is how many requests of the same run (since the same
	// Reset) were in flight when it arrived, itself included: 1 means it
	// waited for nobody's round trip and nobody waited for its.
	InFlight int
	Done     bool // the handler has returned
}

// WANProxy is a loopback plain-HTTP reverse proxy in front of a registry
// that emulates a wide-area link: a round trip added to every request and
// to every new connection, an optional bandwidth cap shared by all
// connections (a token bucket: one stream gets the whole rate, concurrent
// streams share it), counters of requests and bytes, and a log of every
// request (Log). It can also inject faults into blob requests (SetFaults):
// delays, connection resets, stalls and redirects to expiring
// signed-URL-like locations on StorageURL.
type WANProxy struct {
	// Host is the proxy's "127.0.0.1:<port>"; URL is "http://" + Host.
	Host, URL string
	// StorageURL is "http://127.0.0.1:<port>" of the proxy's second
	// listener, the "blob storage" that Faults.RedirectUses redirects to.
	StorageURL string

	opts     WANOptions
	srv      *http.Server
	storage  *http.Server
	ln       net.Listener
	requests atomic.Int64
	bytes    atomic.Int64
	conns    atomic.Int64

	bwMu   sync.Mutex
	bwNext time.Time // when the link has sent every byte granted so far
	// sleep is how throttle waits for its bytes' turn: time.Sleep. Tests
	// replace it (before the first request) with one that wakes late, as
	// a loaded machine does.
	sleep func(time.Duration)

	// mu guards the log and the in-flight counts; idle is signalled when
	// a request ends or the proxy is Reset.
	mu      sync.Mutex
	idle    *sync.Cond
	start   time.Time
	entries []*WANRequest
	// inFlight counts the requests in flight by the run (generation, one
	// per Reset) they arrived in: one that a stopped client left hanging
	// must not make every request of a later run look concurrent.
	inFlight map[int]int
	gen      int

	faults faultState
}

// NewWANProxy starts a proxy for target ("<scheme>://<host>"). Close it
// when done.
func NewWANProxy(target string, opts WANOptions) (*WANProxy, error) {
	tu, err := url.Parse(target)
	if err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	sln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		ln.Close()
		return nil, err
	}
	return serveWANProxy(tu, opts, ln, sln), nil
}

// serveWANProxy starts a proxy for tu on ln (the proxy) and sln (its
// storage). Tests give it in-memory listeners to run the proxy inside a
// testing/synctest bubble, where its clock and its sleeps are virtual.
func serveWANProxy(tu *url.URL, opts WANOptions, ln, sln net.Listener) *WANProxy {
	if opts.Burst <= 0 {
		opts.Burst = DefaultWANBurst
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	p := &WANProxy{opts: opts, ln: ln, start: time.Now(), inFlight: map[int]int{}, sleep: time.Sleep}
	p.idle = sync.NewCond(&p.mu)
	p.Host = ln.Addr().String()
	p.URL = "http://" + p.Host
	p.StorageURL = "http://" + sln.Addr().String()
	p.faults.init(opts.Faults)
	tr := opts.Transport
	if tr == nil {
		t := http.DefaultTransport.(*http.Transport).Clone()
		t.Proxy = nil
		t.MaxIdleConnsPerHost = 64
		tr = t
	}
	rp := &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.SetURL(tu)
			pr.Out.Host = tu.Host
		},
		Transport:     tr,
		FlushInterval: -1,
		ErrorLog:      log.New(io.Discard, "", 0),
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			w.WriteHeader(http.StatusBadGateway)
		},
	}
	newServer := func(storage bool) *http.Server {
		return &http.Server{
			Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				p.handle(w, r, rp, storage)
			}),
			ConnContext:       withConn,
			ReadHeaderTimeout: 30 * time.Second,
		}
	}
	p.srv, p.storage = newServer(false), newServer(true)
	go func() { _ = p.srv.Serve(&wanListener{Listener: ln, p: p}) }()
	go func() { _ = p.storage.Serve(&wanListener{Listener: sln, p: p}) }()
	return p
}

// StartWANProxy is NewWANProxy that fails tb on error and closes the proxy
// in tb.Cleanup.
func StartWANProxy(tb testing.TB, target string, opts WANOptions) *WANProxy {
	tb.Helper()
	p, err := NewWANProxy(target, opts)
	if err != nil {
		tb.Fatalf("wan proxy: %v", err)
	}
	tb.Cleanup(func() { _ = p.Close() })
	return p
}

// Close stops the proxy and its connections.
func (p *WANProxy) Close() error {
	return errors.Join(p.srv.Close(), p.storage.Close())
}

// Stats returns the counters.
func (p *WANProxy) Stats() WANStats {
	f := &p.faults
	return WANStats{Requests: p.requests.Load(), ResponseBytes: p.bytes.Load(), Connections: p.conns.Load(),
		Delayed: f.delayed.Load(), Resets: f.resets.Load(), Redirects: f.redirects.Load(), Expired: f.expired.Load()}
}

// Reset zeroes the counters, empties the log and restarts the log's clock:
// a new run. It returns how many requests of earlier runs are still in
// flight (their clients were stopped, say); they are not counted in the
// new run's log or concurrency, though the bytes they still send are
// counted in Stats.
func (p *WANProxy) Reset() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.requests.Store(0)
	p.bytes.Store(0)
	p.conns.Store(0)
	p.faults.resetCounters()
	left := 0
	for _, n := range p.inFlight {
		left += n
	}
	p.entries, p.start = nil, time.Now()
	p.gen++
	p.idle.Broadcast()
	return left
}

// Log returns the requests that arrived since the proxy started or was
// last Reset, by arrival, those still in flight included (Done false).
func (p *WANProxy) Log() []WANRequest {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make([]WANRequest, len(p.entries))
	for i, e := range p.entries {
		out[i] = *e
	}
	return out
}

// WaitIdle blocks until no request that arrived since the last Reset is in
// flight, or ctx ends. A client has a response's last byte a moment before
// the proxy's handler returns; WaitIdle is how to know the proxy is done
// with it too (its log entry complete, its in-flight count released).
func (p *WANProxy) WaitIdle(ctx context.Context) error {
	stop := context.AfterFunc(ctx, func() {
		p.mu.Lock()
		p.idle.Broadcast()
		p.mu.Unlock()
	})
	defer stop()
	p.mu.Lock()
	defer p.mu.Unlock()
	for p.inFlight[p.gen] > 0 {
		if err := ctx.Err(); err != nil {
			return err
		}
		p.idle.Wait()
	}
	return nil
}

// handle logs one request and counts it in flight around serve.
func (p *WANProxy) handle(w http.ResponseWriter, r *http.Request, rp *httputil.ReverseProxy, storage bool) {
	p.mu.Lock()
	gen, start := p.gen, p.start
	p.inFlight[gen]++
	e := &WANRequest{At: time.Since(start), Method: r.Method, Path: r.URL.Path, Range: r.Header.Get("Range"), InFlight: p.inFlight[gen]}
	p.entries = append(p.entries, e)
	p.mu.Unlock()
	lw := &logWriter{ResponseWriter: w, p: p, e: e, start: start}
	p.serve(lw, r, rp, storage)
	p.mu.Lock()
	if p.inFlight[gen]--; p.inFlight[gen] == 0 {
		delete(p.inFlight, gen)
	}
	e.Took, e.Done = time.Since(start)-e.At, true
	p.idle.Broadcast()
	p.mu.Unlock()
}

// logWriter records a response in its log entry.
type logWriter struct {
	http.ResponseWriter
	p     *WANProxy
	e     *WANRequest
	start time.Time
}

func (w *logWriter) WriteHeader(code int) {
	w.p.mu.Lock()
	if w.e.Status == 0 {
		w.e.Status = code
	}
	w.p.mu.Unlock()
	w.ResponseWriter.WriteHeader(code)
}

func (w *logWriter) Write(b []byte) (int, error) {
	n, err := w.ResponseWriter.Write(b)
	if n > 0 {
		at := time.Since(w.start)
		w.p.mu.Lock()
		if w.e.Status == 0 {
			w.e.Status = http.StatusOK
		}
		if w.e.Bytes == 0 {
			w.e.FirstByte = at
		}
		w.e.Bytes += int64(n)
		w.e.LastByte = at
		w.p.mu.Unlock()
	}
	return n, err
}

func (w *logWriter) Flush() { _ = http.NewResponseController(w.ResponseWriter).Flush() }

// Unwrap lets http.ResponseController reach the underlying writer.
func (w *logWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// String describes the stats, for logs.
func (s WANStats) String() string {
	return fmt.Sprintf("%d requests, %d response bytes, %d connections; faults: %d delayed, %d resets, %d redirects, %d expired",
		s.Requests, s.ResponseBytes, s.Connections, s.Delayed, s.Resets, s.Redirects, s.Expired)
}

// throttle blocks until n more bytes of a response may cross the shared
// link, and returns when they were due. prev is when the response's
// previous bytes were due (zero for its first).
//
// The link is a token bucket shared by every connection: bwNext is when
// it will have sent all the bytes granted so far, and each grant of n
// bytes moves it on by n/bandwidth; a sender sleeps until its bytes' turn.
// Sleeps overshoot (timer slack, and a sender that is not running at all
// on a loaded machine). Had the schedule restarted from "now" after each
// overshoot, every one would be lost, which capped one stream at about
// half the rate. Instead the schedule may lag the clock: by up to Burst on
// any grant (all the credit an idle link saves), and for a response that
// is under way back to where its own previous grant was due (at most
// wanCatchUp ago), so a sender that woke late sends its next bytes without
// sleeping until it is back on its schedule. A response therefore never
// gets more than the bandwidth over its lifetime, plus Burst.
func (p *WANProxy) throttle(n int, prev time.Time) time.Time {
	bw := p.opts.BandwidthBytesPerSec
	if bw <= 0 || n <= 0 {
		return time.Time{}
	}
	d := time.Duration(float64(n) / float64(bw) * float64(time.Second))
	p.bwMu.Lock()
	now := time.Now()
	floor := now.Add(-p.opts.Burst)
	if !prev.IsZero() && prev.Before(floor) {
		floor = prev
		if limit := now.Add(-wanCatchUp); floor.Before(limit) {
			floor = limit
		}
	}
	if p.bwNext.Before(floor) {
		p.bwNext = floor
	}
	p.bwNext = p.bwNext.Add(d)
	due := p.bwNext
	p.bwMu.Unlock()
	if wait := due.Sub(now); wait > 0 {
		p.sleep(wait)
	}
	return due
}

type wanWriter struct {
	http.ResponseWriter
	p *WANProxy
	// resetAfter, when >= 0, resets the connection once that many body
	// bytes are sent; sent counts them.
	resetAfter, sent int64
	wasReset         bool // reset() ran
	conn             net.Conn
	due              time.Time // when the bytes of the last throttle were due
	// pos is the blob offset of the next body byte, and corrupt the blob
	// offsets whose bytes are flipped (Faults.CorruptOffsets)
	pos     int64
	corrupt []int64
}

func (w *wanWriter) Write(b []byte) (int, error) {
	written := 0
	for len(b) > 0 {
		n := min(len(b), wanChunk)
		if w.resetAfter >= 0 && w.sent+int64(n) > w.resetAfter {
			if n = int(w.resetAfter - w.sent); n == 0 {
				w.reset()
				return written, errInjectedReset
			}
		}
		chunk := b[:n]
		for _, c := range w.corrupt {
			if c >= w.pos && c < w.pos+int64(n) {
				chunk = append([]byte(nil), chunk...)
				chunk[c-w.pos] ^= 0xff
			}
		}
		w.due = w.p.throttle(n, w.due)
		// Count before writing so a client that has the bytes sees them
		// counted; take back what was not written.
		w.p.bytes.Add(int64(n))
		m, err := w.ResponseWriter.Write(chunk)
		written += m
		w.sent += int64(m)
		w.pos += int64(m)
		w.p.bytes.Add(int64(m - n))
		if err != nil {
			return written, err
		}
		b = b[n:]
	}
	return written, nil
}

func (w *wanWriter) Flush() {
	if f, ok := w.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

// Unwrap lets http.ResponseController reach the underlying writer.
func (w *wanWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

type wanListener struct {
	net.Listener
	p *WANProxy
}

func (l *wanListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	l.p.conns.Add(1)
	return &wanConn{Conn: c, rtt: l.p.opts.RTT}, nil
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
