package registry

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"
)

// TestWANProxyBandwidth: the link's cap is shared by all streams, and one
// stream alone gets all of it, also when every sleep of the sender wakes
// late (as on a loaded machine: a schedule that restarted from "now" after
// each late wake-up lost every overshoot and gave one stream about half of
// the link). The proxy runs in a testing/synctest bubble on in-memory
// connections, so its clock and its sleeps are virtual: time moves only
// when every goroutine waits, the CPU the transfer takes costs no time,
// and the rates are exact, whatever the load. The rate is computed from the
// proxy's own log (bytes over the span from the first to the last body
// byte it sent). The transfers last about 1.5 s of virtual time, so that
// the Burst of credit (20 ms) and the last chunk weigh little in the upper
// bound. The real-time rate is BenchmarkWANProxyBandwidth's.
func TestWANProxyBandwidth(t *testing.T) {
	const bw = 100e6 / 8 // 100 Mbit/s; a 16 KiB chunk takes 1.3 ms
	tests := []struct {
		name    string
		streams int
		size    int           // bytes per stream
		late    time.Duration // how late every throttle sleep wakes
	}{
		{name: "one stream gets the whole link", streams: 1, size: 18 << 20},
		{name: "one stream gets it with late wake-ups", streams: 1, size: 18 << 20, late: 3 * time.Millisecond},
		{name: "two streams share it", streams: 2, size: 9 << 20},
		{name: "two streams share it with late wake-ups", streams: 2, size: 9 << 20, late: 3 * time.Millisecond},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				body := make([]byte, tc.size)
				mem := newMemNet()
				p := serveWANProxy(&url.URL{Scheme: "http", Host: "registry.test"},
					WANOptions{RTT: 5 * time.Millisecond, BandwidthBytesPerSec: bw, Transport: bytesTransport(body)},
					mem.listen("wan.test:80"), mem.listen("storage.test:80"))
				defer p.Close()
				p.sleep = func(d time.Duration) { time.Sleep(d + tc.late) }
				tr := &http.Transport{DialContext: mem.dial}
				defer tr.CloseIdleConnections()
				client := &http.Client{Transport: tr}
				var wg sync.WaitGroup
				errs := make([]error, tc.streams)
				for i := range tc.streams {
					wg.Go(func() {
						resp, err := client.Get(fmt.Sprintf("%s/v2/x/blobs/sha256:%02d", p.URL, i))
						if err != nil {
							errs[i] = err
							return
						}
						defer resp.Body.Close()
						if n, err := io.Copy(io.Discard, resp.Body); err != nil || n != int64(tc.size) {
							errs[i] = fmt.Errorf("read %d bytes: %v", n, err)
						}
					})
				}
				wg.Wait()
				for _, err := range errs {
					if err != nil {
						t.Fatal(err)
					}
				}
				if err := p.WaitIdle(context.Background()); err != nil {
					t.Fatal(err)
				}
				l := p.Log()
				if len(l) != tc.streams {
					t.Fatalf("%d requests logged, want %d: %+v", len(l), tc.streams, l)
				}
				var total int64
				first, last := l[0].FirstByte, l[0].LastByte
				for _, e := range l {
					if e.Bytes != int64(tc.size) || e.Status != http.StatusOK || !e.Done {
						t.Fatalf("logged %+v, want %d bytes, status 200, done", e, tc.size)
					}
					total += e.Bytes
					first, last = min(first, e.FirstByte), max(last, e.LastByte)
					// each stream gets a fair part of the link while the others run
					if rate := float64(e.Bytes) / (e.LastByte - e.FirstByte).Seconds(); tc.streams > 1 && rate < bw/float64(tc.streams)/2 {
						t.Errorf("one of %d streams got %.1f%% of the link", tc.streams, rate/bw*100)
					}
				}
				if st := p.Stats(); st.ResponseBytes != total || st.Requests != int64(tc.streams) {
					t.Errorf("stats %v, want %d bytes in %d requests", st, total, tc.streams)
				}
				span := (last - first).Seconds()
				got := float64(total) / span / bw
				// never more than the link plus its burst of credit and one chunk
				ceiling := 1 + (DefaultWANBurst.Seconds()*bw+wanChunk)/bw/span
				t.Logf("%d stream(s), sleeps %v late: %d bytes in %.3f s of virtual time: %.1f%% of the configured bandwidth (ceiling %.1f%%)",
					tc.streams, tc.late, total, span, got*100, ceiling*100)
				if got < 0.95 || got > ceiling {
					t.Errorf("the link carried %.1f%% of its bandwidth, want 95%% to %.1f%%", got*100, ceiling*100)
				}
			})
		})
	}
}

// BenchmarkWANProxyBandwidth measures, in real time on loopback sockets,
// the share of the configured bandwidth that streams get through the
// proxy, by its log (as TestWANProxyBandwidth does in virtual time). It is
// a measurement, not a test: on a loaded machine a sender that is not
// running loses time that the link's catch-up (wanCatchUp) may not win
// back. It reports %cap, the streams' total rate over the cap.
func BenchmarkWANProxyBandwidth(b *testing.B) {
	const bw = 100e6 / 8
	for _, streams := range []int{1, 2} {
		b.Run(fmt.Sprintf("streams=%d", streams), func(b *testing.B) {
			size := 4 << 20 / streams
			body := make([]byte, size)
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.Write(body) }))
			defer srv.Close()
			p := StartWANProxy(b, srv.URL, WANOptions{RTT: 5 * time.Millisecond, BandwidthBytesPerSec: bw})
			b.SetBytes(int64(size * streams))
			var bytes int64
			var span time.Duration
			for b.Loop() {
				p.Reset()
				var wg sync.WaitGroup
				for i := range streams {
					wg.Go(func() {
						resp, err := http.Get(fmt.Sprintf("%s/v2/x/blobs/sha256:%02d", p.URL, i))
						if err != nil {
							b.Error(err)
							return
						}
						defer resp.Body.Close()
						if n, err := io.Copy(io.Discard, resp.Body); err != nil || n != int64(size) {
							b.Errorf("read %d bytes: %v", n, err)
						}
					})
				}
				wg.Wait()
				if err := p.WaitIdle(context.Background()); err != nil {
					b.Fatal(err)
				}
				l := p.Log()
				first, last := l[0].FirstByte, l[0].LastByte
				for _, e := range l {
					bytes += e.Bytes
					first, last = min(first, e.FirstByte), max(last, e.LastByte)
				}
				span += last - first
			}
			if span > 0 {
				b.ReportMetric(float64(bytes)/span.Seconds()/bw*100, "%cap")
			}
		})
	}
}

// TestWANProxyRunsApart: a request an earlier run (before Reset) left
// hanging is reported by Reset and counted neither in the new run's
// concurrency nor in its log. It synchronises on events, not on time: the
// backend says when the hanging request has reached it, and WaitIdle when
// the proxy is done with a request whose response the client has read.
func TestWANProxyRunsApart(t *testing.T) {
	release, reached := make(chan struct{}), make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasSuffix(r.URL.Path, "/hang") {
			close(reached)
			<-release
		}
		w.Write([]byte("ok"))
	}))
	defer srv.Close()
	defer close(release)
	p := StartWANProxy(t, srv.URL, WANOptions{})
	go func() {
		if resp, err := http.Get(p.URL + "/v2/x/blobs/hang"); err == nil {
			resp.Body.Close()
		}
	}()
	<-reached
	if left := p.Reset(); left != 1 {
		t.Errorf("Reset reports %d requests still in flight, want 1", left)
	}
	for range 2 {
		resp, err := http.Get(p.URL + "/v2/x/blobs/sha256:00")
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if err := p.WaitIdle(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	l := p.Log()
	if len(l) != 2 {
		t.Fatalf("after the reset: %d requests logged, want 2 (%+v)", len(l), l)
	}
	for _, e := range l {
		if e.InFlight != 1 || !e.Done || e.Bytes != 2 || e.Status != http.StatusOK || e.Path != "/v2/x/blobs/sha256:00" {
			t.Errorf("logged %+v, want a finished 2-byte 200 of sha256:00 with nothing else in flight", e)
		}
	}
}

// bytesTransport is a target that answers every request with body, in
// memory.
//
// The body's first read sleeps a nanosecond of virtual time. The reverse
// proxy (FlushInterval -1) starts a timer of -1 that flushes the header
// from a goroutine of its own, under the lock its body writes hold; if
// that goroutine waited on the lock while a write slept in throttle, the
// bubble could never advance its clock (a goroutine waiting on a mutex is
// not durably blocked) and the test would hang. The sleep lets it finish
// before the first write.
func bytesTransport(body []byte) http.RoundTripper {
	return roundTripFunc(func(r *http.Request) (*http.Response, error) {
		return &http.Response{
			StatusCode: http.StatusOK, Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1,
			Header:        http.Header{"Content-Length": {strconv.Itoa(len(body))}},
			ContentLength: int64(len(body)),
			Body:          io.NopCloser(&sleepFirstReader{r: bytes.NewReader(body)}),
			Request:       r,
		}, nil
	})
}

type sleepFirstReader struct {
	r     io.Reader
	slept bool
}

func (r *sleepFirstReader) Read(b []byte) (int, error) {
	if !r.slept {
		r.slept = true
		time.Sleep(time.Nanosecond)
	}
	return r.r.Read(b)
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

// memNet is an in-memory network of listeners by address, whose
// connections are net.Pipes: inside a synctest bubble, a goroutine that
// waits on one is durably blocked, as it is not on a socket.
type memNet struct {
	mu sync.Mutex
	ln map[string]*memListener
}

func newMemNet() *memNet { return &memNet{ln: map[string]*memListener{}} }

func (m *memNet) listen(addr string) *memListener {
	l := &memListener{addr: memAddr(addr), conns: make(chan net.Conn), done: make(chan struct{})}
	m.mu.Lock()
	m.ln[addr] = l
	m.mu.Unlock()
	return l
}

// dial is http.Transport.DialContext.
func (m *memNet) dial(ctx context.Context, network, addr string) (net.Conn, error) {
	m.mu.Lock()
	l := m.ln[addr]
	m.mu.Unlock()
	if l == nil {
		return nil, fmt.Errorf("dial %s: no listener", addr)
	}
	c, s := net.Pipe()
	select {
	case l.conns <- s:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

type memListener struct {
	addr  memAddr
	conns chan net.Conn
	done  chan struct{}
	once  sync.Once
}

func (l *memListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

func (l *memListener) Close() error {
	l.once.Do(func() { close(l.done) })
	return nil
}

func (l *memListener) Addr() net.Addr { return l.addr }

type memAddr string

func (a memAddr) Network() string { return "mem" }
func (a memAddr) String() string  { return string(a) }
