package fetcher

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"testing"
	"time"
)

// stallServer answers blob range requests; stall says, per blob request
// (1-based), after how many body bytes the answer stops sending and holds
// the connection open (-1: never; 0: right after the headers). With piece
// set the body goes out in pieces of that many bytes, every apart.
type stallServer struct {
	*fakeRegistry
	stop chan struct{}
}

func newStallServer(t *testing.T, data []byte, stall func(n int) int64, piece int64, every time.Duration) *stallServer {
	t.Helper()
	s := &stallServer{stop: make(chan struct{})}
	s.fakeRegistry = newFakeRegistry(t, data, func(n int, w http.ResponseWriter, r *http.Request) bool {
		cut := stall(n)
		if cut < 0 && piece == 0 {
			return false
		}
		a, e := parseRange(t, r.Header.Get("Range"))
		w.Header().Set("Content-Range", fmt.Sprintf("bytes %d-%d/%d", a, e-1, len(data)))
		w.Header().Set("Content-Length", strconv.FormatInt(e-a, 10))
		w.WriteHeader(http.StatusPartialContent)
		w.(http.Flusher).Flush()
		end := e
		if cut >= 0 {
			end = min(e, a+cut)
		}
		for p := a; p < end; {
			q := end
			if piece > 0 {
				q = min(end, p+piece)
			}
			if _, err := w.Write(data[p:q]); err != nil {
				return true
			}
			w.(http.Flusher).Flush()
			p = q
			if piece > 0 && p < end {
				select {
				case <-time.After(every):
				case <-r.Context().Done():
					return true
				}
			}
		}
		if cut >= 0 {
			// stalled: nothing more until the client gives up
			select {
			case <-r.Context().Done():
			case <-s.stop:
			}
		}
		return true
	})
	// before the server's Close (cleanups run last first), which waits
	// for the handlers
	t.Cleanup(func() { close(s.stop) })
	return s
}

// TestStallTimeout: a response that stops sending mid-body is given up
// after StallTimeout and retried, long before RequestTimeout; a stream
// that takes longer than RequestTimeout but keeps sending completes; a
// server that stalls every time ends in ErrTimeout.
func TestStallTimeout(t *testing.T) {
	data := randBytes(80, 1<<20)
	const off, n = 3000, 512 << 10
	never := func(int) int64 { return -1 }
	// first: the first request stalls after cut bytes; always: every one
	first := func(cut int64) func(int) int64 {
		return func(k int) int64 {
			if k == 1 {
				return cut
			}
			return -1
		}
	}
	always := func(cut int64) func(int) int64 { return func(int) int64 { return cut } }
	tests := []struct {
		name   string
		stream bool
		stall  func(n int) int64
		// body sent in piece bytes every every (0: at once)
		piece int64
		every time.Duration
		cfg   Config
		// wantErr, else the bytes; wantReqs blob requests
		wantErr  error
		wantReqs int
		// minTime: the server takes at least this long (a sanity check
		// that the case is what it says)
		minTime time.Duration
	}{
		{
			name: "read: half the body, then a stall: retried", stall: first(n / 2),
			cfg:      Config{RequestTimeout: 30 * time.Second, StallTimeout: 200 * time.Millisecond},
			wantReqs: 2,
		},
		{
			name: "stream: half the body, then a stall: resumed", stream: true, stall: first(n / 2),
			cfg:      Config{RequestTimeout: 30 * time.Second, StallTimeout: 200 * time.Millisecond},
			wantReqs: 2,
		},
		{
			name: "read: headers, then a stall: retried", stall: first(0),
			cfg:      Config{RequestTimeout: 30 * time.Second, StallTimeout: 200 * time.Millisecond},
			wantReqs: 2,
		},
		{
			// 32 pieces 25 ms apart: 800 ms for an attempt of 300 ms
			name: "stream: slower than RequestTimeout, never stalling: completes", stream: true,
			stall: never, piece: n / 32, every: 25 * time.Millisecond,
			cfg:      Config{RequestTimeout: 300 * time.Millisecond, StallTimeout: 2 * time.Second, Retries: -1},
			wantReqs: 1, minTime: 300 * time.Millisecond,
		},
		{
			name: "read: slower than RequestTimeout: bounded as a whole", stall: never, piece: n / 32, every: 25 * time.Millisecond,
			cfg:     Config{RequestTimeout: 300 * time.Millisecond, StallTimeout: 2 * time.Second, Retries: 1},
			wantErr: ErrTimeout, wantReqs: 2,
		},
		{
			// each attempt gets 64 KiB and stalls: 8 stalls, with 1 retry
			name: "stream: stalls after progress do not use up the retries", stream: true,
			stall:    always(64 << 10),
			cfg:      Config{RequestTimeout: 30 * time.Second, StallTimeout: 100 * time.Millisecond, Retries: 1},
			wantReqs: n / (64 << 10),
		},
		{
			name: "read: stalls every time: ErrTimeout", stall: always(n / 2),
			cfg:     Config{RequestTimeout: 30 * time.Second, StallTimeout: 100 * time.Millisecond, Retries: 2},
			wantErr: ErrTimeout, wantReqs: 3,
		},
		{
			name: "stream: stalls before any byte every time: ErrTimeout", stream: true, stall: always(0),
			cfg:     Config{RequestTimeout: 30 * time.Second, StallTimeout: 100 * time.Millisecond, Retries: 2},
			wantErr: ErrTimeout, wantReqs: 3,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := newStallServer(t, data, tc.stall, tc.piece, tc.every)
			f := newTestFetcher(t, tc.cfg)
			b := mustBlob(t, f, s.ref(), s.desc())
			start := time.Now()
			var got []byte
			var err error
			if tc.stream {
				err = b.StreamRange(context.Background(), off, n, func(p []byte) { got = append(got[:0], p...) })
			} else {
				got, err = b.ReadRange(context.Background(), off, n)
			}
			el := time.Since(start)
			if tc.wantErr != nil {
				if !errors.Is(err, tc.wantErr) {
					t.Fatalf("err = %v, want %v", err, tc.wantErr)
				}
				if c := f.ErrorStats()["timeout"]; c != 1 {
					t.Errorf("ErrorStats timeout = %d, want 1 (%v)", c, f.ErrorStats())
				}
				t.Logf("error: %v", err)
			} else if err != nil {
				t.Fatal(err)
			} else if !bytes.Equal(got, data[off:off+n]) {
				t.Fatalf("got %d bytes, not the range's", len(got))
			}
			if r := s.blobRequests(); r != tc.wantReqs {
				t.Errorf("blob requests = %d, want %d: %+v", r, tc.wantReqs, s.requests())
			}
			if el < tc.minTime {
				t.Errorf("took %v, less than the server takes (%v)", el, tc.minTime)
			}
			// far below the 30 s RequestTimeout of the stalling cases
			if el > 10*time.Second {
				t.Errorf("took %v", el)
			}
		})
	}
}

// TestStallTimeoutDisabled: with a negative StallTimeout a stalled body is
// bounded by RequestTimeout, streams included.
func TestStallTimeoutDisabled(t *testing.T) {
	data := randBytes(81, 256<<10)
	for _, stream := range []bool{false, true} {
		t.Run(fmt.Sprintf("stream=%v", stream), func(t *testing.T) {
			s := newStallServer(t, data, func(int) int64 { return 10 }, 0, 0)
			f := newTestFetcher(t, Config{RequestTimeout: 200 * time.Millisecond, StallTimeout: -1, Retries: -1})
			b := mustBlob(t, f, s.ref(), s.desc())
			var err error
			if stream {
				err = b.StreamRange(context.Background(), 0, 1000, func([]byte) {})
			} else {
				_, err = b.ReadRange(context.Background(), 0, 1000)
			}
			if !errors.Is(err, ErrTimeout) {
				t.Fatalf("err = %v, want ErrTimeout", err)
			}
		})
	}
}

// TestStallSharedRead: of two readers sharing a fetch whose response
// stalls, the one that gives up returns at once and the other gets the
// bytes from the retry.
func TestStallSharedRead(t *testing.T) {
	data := randBytes(82, 256<<10)
	const off, n = 100, 100 << 10
	arrived := make(chan struct{})
	s := newStallServer(t, data, func(k int) int64 {
		if k == 1 {
			close(arrived)
			return n / 2
		}
		return -1
	}, 0, 0)
	f := newTestFetcher(t, Config{RequestTimeout: 30 * time.Second, StallTimeout: 300 * time.Millisecond})
	b := mustBlob(t, f, s.ref(), s.desc())
	patient := goReadRange(context.Background(), b, off, n)
	<-arrived
	ctx, cancel := context.WithCancel(context.Background())
	impatient := goReadRange(ctx, b, off, n)
	waitFor(t, "both readers on the flight", func() bool { return f.flights.waiters(b.key(Range{off, n})) == 2 })
	cancel()
	if r := <-impatient; !errors.Is(r.err, context.Canceled) {
		t.Fatalf("cancelled reader: %v, want context.Canceled", r.err)
	}
	r := <-patient
	if r.err != nil || !bytes.Equal(r.data, data[off:off+n]) {
		t.Fatalf("other reader: %d bytes, %v", len(r.data), r.err)
	}
	if got := s.blobRequests(); got != 2 {
		t.Errorf("blob requests = %d, want 2 (the stalled one and its retry)", got)
	}
}

// TestStreamHeaderTimeout: a stream's attempt is not bounded as a whole,
// but its wait for the response headers is, by RequestTimeout.
func TestStreamHeaderTimeout(t *testing.T) {
	data := randBytes(83, 64<<10)
	stop := make(chan struct{})
	s := newFakeRegistry(t, data, func(_ int, w http.ResponseWriter, r *http.Request) bool {
		select {
		case <-r.Context().Done():
		case <-stop:
		}
		return true
	})
	t.Cleanup(func() { close(stop) })
	f := newTestFetcher(t, Config{RequestTimeout: 200 * time.Millisecond, StallTimeout: time.Minute, Retries: 1})
	b := mustBlob(t, f, s.ref(), s.desc())
	err := b.StreamRange(context.Background(), 0, 1000, func([]byte) {})
	if !errors.Is(err, ErrTimeout) {
		t.Fatalf("err = %v, want ErrTimeout", err)
	}
	if n := s.blobRequests(); n != 2 {
		t.Errorf("blob requests = %d, want 2", n)
	}
}
