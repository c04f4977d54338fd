package registry

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httputil"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Faults are a WANProxy's switchable fault modes. They apply to blob
// requests only (GET and HEAD of /v2/<name>/blobs/<digest>, and requests to
// the storage listener), so that manifests still resolve and pushes, which
// go to the registry directly, are unaffected. Modes combine; the zero
// value injects nothing.
type Faults struct {
	// Delay holds each blob request this long before it is answered: a
	// slow registry (the request's context still cancels the wait).
	Delay time.Duration
	// ResetEvery resets the client connection (TCP RST) of every Nth blob
	// request, counted from SetFaults: 1 resets all, 0 none. A response
	// that ends before ResetAfter bytes passes its reset on to the next
	// blob request, so that resets happen whatever sizes the requests
	// have (a client that makes fewer or smaller requests still meets them).
	ResetEvery int
	// ResetAfter is how many response body bytes are sent (and flushed)
	// before such a reset; 0 resets before the response header, as a
	// server that drops the connection would.
	ResetAfter int64
	// StallEvery makes every Nth blob GET, counted from SetFaults, stall
	// mid-body: the response header and StallAfter body bytes are sent
	// (and flushed), then nothing more while the connection stays open,
	// until the client gives up (closes it) or the proxy is closed. 1
	// stalls all, 0 none. A response with less body than that is sent
	// whole.
	StallEvery int
	// StallAfter is how many body bytes a stalling response sends; 0
	// stalls right after the header.
	StallAfter int64
	// RedirectUses, when positive, answers blob GETs and HEADs on the
	// proxy with 307 Temporary Redirect to a fresh signed-URL-like location
	// on StorageURL. A location serves the blob (with the original
	// request's Authorization) for RedirectUses requests; after that it
	// is refused with 403 and an S3-style "Request has expired" body.
	RedirectUses int
	// RedirectTTL, when positive, also expires a location this long after
	// it was issued.
	RedirectTTL time.Duration
	// ResetAtOffset, when positive, resets every blob GET when its body
	// reaches that offset of the blob (a range starting at or past it is
	// reset before its header): a registry that breaks at the same place
	// whenever it is asked, so that resuming makes no progress.
	ResetAtOffset int64
	// CorruptOffsets are blob offsets whose byte every blob GET flips on
	// its way to the client: a registry whose storage went bad.
	CorruptOffsets []int64
}

// SetFaults switches the fault modes for requests that arrive from now
// on; the reset and stall counts restart. Locations issued before stay valid under
// the rules they were issued with.
func (p *WANProxy) SetFaults(f Faults) { p.faults.set(f) }

// Faults returns the fault modes in force.
func (p *WANProxy) Faults() Faults { return *p.faults.cur.Load() }

// Stalls is how many responses have stalled (Faults.StallEvery) since the
// proxy started or its counters were Reset.
func (p *WANProxy) Stalls() int64 { return p.faults.stalls.Load() }

// errInjectedReset is what a wanWriter returns after resetting the
// connection; the reverse proxy then aborts the handler.
var errInjectedReset = errors.New("registry: wan proxy: injected connection reset")

// errInjectedStall is what a stallWriter returns once its client has given
// up on the stalled response.
var errInjectedStall = errors.New("registry: wan proxy: injected stall ended")

// faultState is a WANProxy's fault configuration, issued locations and
// counters.
type faultState struct {
	cur atomic.Pointer[Faults]
	seq atomic.Int64 // blob requests since SetFaults, for ResetEvery
	// owed counts ResetEvery resets whose response ended before
	// ResetAfter bytes: each is made on the next blob request instead, so
	// that resets happen however the requests' sizes fall
	owed     atomic.Int64
	stallSeq atomic.Int64 // blob GETs since SetFaults, for StallEvery

	delayed, resets, redirects, expired, stalls atomic.Int64

	mu     sync.Mutex
	signed map[string]*signedURL
}

// signedURL is a location issued by a redirect.
type signedURL struct {
	path, query, auth string
	uses              int
	expires           time.Time // zero: no time limit
}

func (s *faultState) init(f Faults) {
	s.signed = map[string]*signedURL{}
	s.set(f)
}

func (s *faultState) set(f Faults) {
	s.cur.Store(&f)
	s.seq.Store(0)
	s.owed.Store(0)
	s.stallSeq.Store(0)
}

func (s *faultState) resetCounters() {
	s.delayed.Store(0)
	s.resets.Store(0)
	s.redirects.Store(0)
	s.expired.Store(0)
	s.stalls.Store(0)
}

// serve handles one request on the proxy (storage false) or on the storage
// listener: round-trip delay, faults, then forwarding through rp.
func (p *WANProxy) serve(w http.ResponseWriter, r *http.Request, rp *httputil.ReverseProxy, storage bool) {
	p.requests.Add(1)
	if err := sleepCtx(r.Context(), p.opts.RTT); err != nil {
		return
	}
	ww := &wanWriter{ResponseWriter: w, p: p, resetAfter: -1}
	if !storage && !isBlobRequest(r) {
		rp.ServeHTTP(ww, r)
		return
	}
	fs := &p.faults
	f := *fs.cur.Load()
	if f.Delay > 0 {
		fs.delayed.Add(1)
		if err := sleepCtx(r.Context(), f.Delay); err != nil {
			return
		}
	}
	if storage && !p.redeem(w, r) {
		return
	}
	if f.ResetEvery > 0 && (fs.seq.Add(1)%int64(f.ResetEvery) == 0 || fs.takeOwed()) {
		conn, _ := r.Context().Value(connKey{}).(net.Conn)
		if f.ResetAfter <= 0 {
			fs.resets.Add(1)
			resetConn(conn)
			return
		}
		ww.resetAfter, ww.conn = f.ResetAfter, conn
		defer func() {
			if !ww.wasReset {
				fs.owed.Add(1) // too short to reset: the next one is
			}
		}()
	}
	if r.Method == http.MethodGet && (f.ResetAtOffset > 0 || len(f.CorruptOffsets) > 0) {
		start := rangeStart(r.Header.Get("Range"))
		ww.pos, ww.corrupt = start, f.CorruptOffsets
		if f.ResetAtOffset > 0 {
			conn, _ := r.Context().Value(connKey{}).(net.Conn)
			if start >= f.ResetAtOffset {
				fs.resets.Add(1)
				resetConn(conn)
				return
			}
			ww.resetAfter, ww.conn = f.ResetAtOffset-start, conn
		}
	}
	if !storage && f.RedirectUses > 0 && (r.Method == http.MethodGet || r.Method == http.MethodHead) {
		p.redirect(w, r, f)
		return
	}
	if f.StallEvery > 0 && r.Method == http.MethodGet && fs.stallSeq.Add(1)%int64(f.StallEvery) == 0 {
		rp.ServeHTTP(&stallWriter{ResponseWriter: ww, ctx: r.Context(), left: f.StallAfter, fs: fs}, r)
		return
	}
	rp.ServeHTTP(ww, r)
}

// stallWriter passes left body bytes on, then stalls: it flushes what was
// written and blocks until ctx (the client's request) ends.
type stallWriter struct {
	http.ResponseWriter
	ctx  context.Context
	left int64
	fs   *faultState
}

func (w *stallWriter) Write(b []byte) (int, error) {
	if int64(len(b)) <= w.left {
		n, err := w.ResponseWriter.Write(b)
		w.left -= int64(n)
		return n, err
	}
	n, err := w.ResponseWriter.Write(b[:w.left])
	w.left -= int64(n)
	if err != nil {
		return n, err
	}
	w.Flush()
	w.fs.stalls.Add(1)
	<-w.ctx.Done()
	return n, errInjectedStall
}

func (w *stallWriter) Flush() { _ = http.NewResponseController(w.ResponseWriter).Flush() }

// Unwrap lets http.ResponseController reach the underlying writer.
func (w *stallWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// rangeStart is the first offset a single "bytes=a-b" range asks for (0
// for none, or one it does not read).
func rangeStart(h string) int64 {
	v, ok := strings.CutPrefix(h, "bytes=")
	if !ok {
		return 0
	}
	a, _, _ := strings.Cut(v, "-")
	n, err := strconv.ParseInt(a, 10, 64)
	if err != nil || n < 0 {
		return 0
	}
	return n
}

// isBlobRequest reports whether r is a GET or HEAD of a blob by digest
// (not an upload).
func isBlobRequest(r *http.Request) bool {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		return false
	}
	i := strings.LastIndex(r.URL.Path, "/blobs/")
	if !strings.HasPrefix(r.URL.Path, "/v2/") || i < 0 {
		return false
	}
	rest := r.URL.Path[i+len("/blobs/"):]
	return strings.Contains(rest, ":") && !strings.Contains(rest, "/")
}

// redirect answers r with a 307 to a new location on the storage listener.
func (p *WANProxy) redirect(w http.ResponseWriter, r *http.Request, f Faults) {
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	tok := hex.EncodeToString(b)
	su := &signedURL{path: r.URL.Path, query: r.URL.RawQuery, auth: r.Header.Get("Authorization"), uses: f.RedirectUses}
	if f.RedirectTTL > 0 {
		su.expires = p.opts.Now().Add(f.RedirectTTL)
	}
	fs := &p.faults
	fs.mu.Lock()
	fs.signed[tok] = su
	fs.mu.Unlock()
	fs.redirects.Add(1)
	w.Header().Set("Location", p.StorageURL+"/signed/"+tok+"?X-Amz-Signature="+tok[:8])
	w.WriteHeader(http.StatusTemporaryRedirect)
}

// redeem checks a storage request's location: a valid one is used once and
// r is rewritten to the blob request it stands for; otherwise it answers
// 403 and returns false.
func (p *WANProxy) redeem(w http.ResponseWriter, r *http.Request) bool {
	fs := &p.faults
	tok, ok := strings.CutPrefix(r.URL.Path, "/signed/")
	fs.mu.Lock()
	su := fs.signed[tok]
	valid := ok && su != nil && su.uses > 0 && (su.expires.IsZero() || p.opts.Now().Before(su.expires))
	if valid {
		su.uses--
	} else if su != nil {
		delete(fs.signed, tok)
	}
	fs.mu.Unlock()
	if !valid {
		fs.expired.Add(1)
		w.Header().Set("Content-Type", "application/xml")
		w.WriteHeader(http.StatusForbidden)
		_, _ = io.WriteString(w, `<?xml version="1.0" encoding="UTF-8"?>`+"\n"+
			`<Error><Code>AccessDenied</Code><Message>Request has expired</Message></Error>`)
		return false
	}
	r.URL.Path, r.URL.RawPath, r.URL.RawQuery = su.path, "", su.query
	if su.auth != "" {
		r.Header.Set("Authorization", su.auth)
	} else {
		r.Header.Del("Authorization")
	}
	return true
}

// reset flushes what was written and resets the connection.
// takeOwed takes one owed reset, if any.
func (s *faultState) takeOwed() bool {
	for {
		n := s.owed.Load()
		if n <= 0 {
			return false
		}
		if s.owed.CompareAndSwap(n, n-1) {
			return true
		}
	}
}

func (w *wanWriter) reset() {
	_ = http.NewResponseController(w.ResponseWriter).Flush()
	// Let the client take in the header and the bytes sent so far, so the
	// reset lands mid-body rather than before the response.
	time.Sleep(20 * time.Millisecond)
	w.wasReset = true
	w.p.faults.resets.Add(1)
	resetConn(w.conn)
}

type connKey struct{}

// withConn is http.Server.ConnContext: it gives handlers their connection.
func withConn(ctx context.Context, c net.Conn) context.Context {
	return context.WithValue(ctx, connKey{}, c)
}

// resetConn closes c with SO_LINGER 0, so the peer gets a TCP RST
// ("connection reset by peer") instead of an orderly close.
func resetConn(c net.Conn) {
	if wc, ok := c.(*wanConn); ok {
		c = wc.Conn
	}
	if tc, ok := c.(*net.TCPConn); ok {
		_ = tc.SetLinger(0)
	}
	if c != nil {
		_ = c.Close()
	}
}
