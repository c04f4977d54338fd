package registry

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"
)

// TestWANProxyBandwidth: the link's cap is shared by all streams, and one
// stream alone gets all of it. The rate is computed from the proxy's own
// log (bytes over the span from the first to the last body byte it sent),
// not from the client's wall time, so that connection set-up and the
// client's scheduling do not enter it. The transfers last about 1.5 s, so
// that the Burst of credit (20 ms) and the last chunk weigh little in the
// upper bound, and the lower bound (95%) allows 75 ms of sender stalls.
func TestWANProxyBandwidth(t *testing.T) {
	const bw = 100e6 / 8 // 100 Mbit/s
	tests := []struct {
		name    string
		streams int
		size    int // bytes per stream
	}{
		{name: "one stream gets the whole link", streams: 1, size: 18 << 20},
		{name: "two streams share it", streams: 2, size: 9 << 20},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			body := make([]byte, tc.size)
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.Write(body) }))
			defer srv.Close()
			p := StartWANProxy(t, srv.URL, WANOptions{RTT: 5 * time.Millisecond, BandwidthBytesPerSec: bw})
			var wg sync.WaitGroup
			errs := make([]error, tc.streams)
			for i := range tc.streams {
				wg.Go(func() {
					resp, err := http.Get(fmt.Sprintf("%s/v2/x/blobs/sha256:%02d", p.URL, i))
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
			t.Logf("%d stream(s): %d bytes in %.3f s by the proxy's clock: %.1f%% of the configured bandwidth (ceiling %.1f%%)",
				tc.streams, total, span, got*100, ceiling*100)
			if got < 0.95 || got > ceiling*1.01 {
				t.Errorf("the link carried %.1f%% of its bandwidth, want 95%% to %.1f%%", got*100, ceiling*100)
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
