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
	// Faults are the fault modes in force from the start (see SetFaults).
	Faults Faults
}

// WANStats are a WANProxy's counters.
type WANStats struct {
	Requests      int64 // requests forwarded
	ResponseBytes int64 // response body bytes sent to clients
	Connections   int64 // client connections accepted
	// Fault counters (see Faults): blob requests held by Delay,
	// connections reset, redirects issued, expired locations refused.
	Delayed, Resets, Redirects, Expired int64
}

// WANProxy is a loopback plain-HTTP reverse proxy in front of a registry
// that emulates a wide-area link: added round-trip delay, an optional shared
// bandwidth cap, and counters of requests and bytes. It can also inject
// faults into blob requests (SetFaults): delays, connection resets and
// redirects to expiring signed-URL-like locations on StorageURL.
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
	bwNext time.Time

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
	p := &WANProxy{opts: opts, ln: ln}
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
				p.serve(w, r, rp, storage)
			}),
			ConnContext:       withConn,
			ReadHeaderTimeout: 30 * time.Second,
		}
	}
	p.srv, p.storage = newServer(false), newServer(true)
	go func() { _ = p.srv.Serve(&wanListener{Listener: ln, p: p}) }()
	go func() { _ = p.storage.Serve(&wanListener{Listener: sln, p: p}) }()
	return p, nil
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

// Reset zeroes the counters.
func (p *WANProxy) Reset() {
	p.requests.Store(0)
	p.bytes.Store(0)
	p.conns.Store(0)
	p.faults.resetCounters()
}

// String describes the stats, for logs.
func (s WANStats) String() string {
	return fmt.Sprintf("%d requests, %d response bytes, %d connections; faults: %d delayed, %d resets, %d redirects, %d expired",
		s.Requests, s.ResponseBytes, s.Connections, s.Delayed, s.Resets, s.Redirects, s.Expired)
}

// throttle blocks until n bytes may pass the shared link.
func (p *WANProxy) throttle(n int) {
	bw := p.opts.BandwidthBytesPerSec
	if bw <= 0 || n <= 0 {
		return
	}
	d := time.Duration(float64(n) / float64(bw) * float64(time.Second))
	p.bwMu.Lock()
	now := time.Now()
	start := p.bwNext
	if start.Before(now) {
		start = now
	}
	p.bwNext = start.Add(d)
	wait := p.bwNext.Sub(now)
	p.bwMu.Unlock()
	time.Sleep(wait)
}

type wanWriter struct {
	http.ResponseWriter
	p *WANProxy
	// resetAfter, when >= 0, resets the connection once that many body
	// bytes are sent; sent counts them.
	resetAfter, sent int64
	conn             net.Conn
}

func (w *wanWriter) Write(b []byte) (int, error) {
	const chunk = 16 << 10
	written := 0
	for len(b) > 0 {
		n := min(len(b), chunk)
		if w.resetAfter >= 0 && w.sent+int64(n) > w.resetAfter {
			if n = int(w.resetAfter - w.sent); n == 0 {
				w.reset()
				return written, errInjectedReset
			}
		}
		w.p.throttle(n)
		// Count before writing so a client that has the bytes sees them
		// counted; take back what was not written.
		w.p.bytes.Add(int64(n))
		m, err := w.ResponseWriter.Write(b[:n])
		written += m
		w.sent += int64(m)
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
