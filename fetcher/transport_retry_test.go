package fetcher

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// step is one scripted answer of a scriptServer.
type step struct {
	status int    // 0: 200
	header string // "Name: value", or ""
	body   string
	short  bool // declare 10 more bytes than body, then end the connection
	reset  bool // reset the connection without an answer
}

// seenRequest is what a scriptServer saw of a request.
type seenRequest struct {
	method, path, query, rng, body, header string
}

// scriptServer answers its n-th request with steps[n-1] (the last step
// once they run out) and records what it saw.
type scriptServer struct {
	*httptest.Server
	steps []step

	mu   sync.Mutex
	seen []seenRequest
}

func newScriptServer(t *testing.T, steps ...step) *scriptServer {
	t.Helper()
	s := &scriptServer{steps: steps}
	s.Server = httptest.NewServer(http.HandlerFunc(s.serve))
	t.Cleanup(s.Close)
	return s
}

func (s *scriptServer) serve(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	s.mu.Lock()
	s.seen = append(s.seen, seenRequest{r.Method, r.URL.Path, r.URL.RawQuery, r.Header.Get("Range"), string(body), r.Header.Get("X-Host")})
	st := s.steps[min(len(s.seen), len(s.steps))-1]
	s.mu.Unlock()
	if st.reset {
		resetConn(w)
		return
	}
	if k, v, ok := strings.Cut(st.header, ": "); ok {
		w.Header().Set(k, v)
	}
	n := len(st.body)
	if st.short {
		n += 10
	}
	w.Header().Set("Content-Length", strconv.Itoa(n))
	w.WriteHeader(orDefault(st.status, http.StatusOK))
	_, _ = io.WriteString(w, st.body)
}

func (s *scriptServer) requests() []seenRequest {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]seenRequest(nil), s.seen...)
}

func orDefault(v, def int) int {
	if v == 0 {
		return def
	}
	return v
}

// plainTransport is a test's own HTTP transport without keep-alives (so
// that net/http never resends a request on a reused connection itself).
func plainTransport(t *testing.T) *http.Transport {
	tr := &http.Transport{DisableKeepAlives: true}
	t.Cleanup(tr.CloseIdleConnections)
	return tr
}

// TestRetryTransport: which failures are retried and which are not, the
// request methods and bodies that may be sent again, backoff under the
// context with Retry-After honoured up to its bound, a consumer's reading
// as part of the attempt, a stream resuming after what it received, and
// a host marked failFast given up after one attempt when it is down.
func TestRetryTransport(t *testing.T) {
	ok := step{body: "0123456789"}
	type consumed int
	const (
		none    consumed = iota // no consumer: the response as it is
		reads                   // reads the whole body (a short one fails it)
		streams                 // reads and has received: a stream
	)
	for _, tc := range []struct {
		name      string
		method    string // "": GET
		body      string // request body
		noGetBody bool
		rng       string
		steps     []step
		consume   consumed
		readErrs  []error // the consumer returns these, one per attempt, then reads
		failFast  bool
		cancel    bool // the context ends in the first backoff

		wantRequests int
		wantKind     error // nil: success
		wantStatus   int
		wantRaw      bool // the error is not a *RequestError
		wantSleeps   []time.Duration
		wantRanges   []string
		wantBodies   []string
		wantFailFast bool
		wantGot      string // what a consumer read in the end
	}{
		{name: "503 then success", steps: []step{{status: 503}, ok}, wantRequests: 2},
		{name: "408 is transient", steps: []step{{status: 408}, ok}, wantRequests: 2},
		{name: "500 until the budget is spent", steps: []step{{status: 500}}, wantRequests: 3, wantKind: ErrUnavailable, wantStatus: 500},
		{name: "404 is permanent", steps: []step{{status: 404}, ok}, consume: reads, wantRequests: 1, wantKind: ErrNotFound, wantStatus: 404},
		{name: "401 is permanent", steps: []step{{status: 401}, ok}, consume: reads, wantRequests: 1, wantKind: ErrUnauthorized, wantStatus: 401},
		{name: "no consumer: a permanent status is the caller's", steps: []step{{status: 404}}, wantRequests: 1},
		{name: "connection reset", steps: []step{{reset: true}, ok}, wantRequests: 2},
		{name: "Retry-After seconds honoured", steps: []step{{status: 429, header: "Retry-After: 3"}, ok},
			wantRequests: 2, wantSleeps: []time.Duration{3 * time.Second}},
		{name: "Retry-After bounded", steps: []step{{status: 503, header: "Retry-After: 3600"}, ok},
			wantRequests: 2, wantSleeps: []time.Duration{maxRetryAfter}},
		{name: "context ends during backoff", steps: []step{{status: 503, header: "Retry-After: 5"}, ok}, cancel: true,
			wantRequests: 1, wantKind: context.Canceled, wantRaw: true, wantSleeps: []time.Duration{5 * time.Second}},
		{name: "short body read by a consumer is retried", steps: []step{{body: "01234", short: true}, ok}, consume: reads,
			wantRequests: 2, wantGot: "0123456789"},
		{name: "consumer's bad response retried until the budget", steps: []step{ok}, consume: reads,
			readErrs:     []error{badResponse(206, "x"), badResponse(206, "x"), badResponse(206, "x")},
			wantRequests: 3, wantKind: ErrBadResponse, wantStatus: 206},
		{name: "consumer's permanent failure", steps: []step{ok}, consume: reads,
			readErrs: []error{attemptErr(ErrRangeNotSatisfied, 416, nil)}, wantRequests: 1, wantKind: ErrRangeNotSatisfied, wantStatus: 416},
		{name: "request-form signal returned as it is", steps: []step{ok}, consume: reads,
			readErrs: []error{errMultiRangeUnsupported}, wantRequests: 1, wantKind: errMultiRangeUnsupported, wantRaw: true},
		{name: "POST is not replayed", method: http.MethodPost, steps: []step{{status: 503}, ok},
			wantRequests: 1, wantKind: ErrUnavailable, wantStatus: 503},
		{name: "PUT body re-got for each attempt", method: http.MethodPut, body: "payload", steps: []step{{status: 503}, ok},
			wantRequests: 2, wantBodies: []string{"payload", "payload"}},
		{name: "PUT body that cannot be re-got is sent once", method: http.MethodPut, body: "payload", noGetBody: true,
			steps: []step{{status: 503}, ok}, wantRequests: 1, wantKind: ErrUnavailable, wantStatus: 503, wantBodies: []string{"payload"}},
		{name: "stream resumes after what it received", rng: "bytes=0-9", consume: streams,
			steps:        []step{{body: "0123", short: true}, {body: "456789"}},
			wantRequests: 2, wantRanges: []string{"bytes=0-9", "bytes=4-9"}, wantGot: "0123456789"},
		{name: "stream making progress outlasts the budget", rng: "bytes=0-9", consume: streams,
			steps:        []step{{body: "0", short: true}, {body: "1", short: true}, {body: "2", short: true}, {body: "3456789"}},
			wantRequests: 4, wantRanges: []string{"bytes=0-9", "bytes=1-9", "bytes=2-9", "bytes=3-9"}, wantGot: "0123456789"},
		{name: "failFast: a host that is down gets one attempt", steps: []step{{status: 503}, ok}, failFast: true,
			wantRequests: 1, wantKind: ErrUnavailable, wantStatus: 503, wantFailFast: true},
		{name: "failFast: a refusing host is retried", steps: []step{ok}, consume: reads, failFast: true,
			readErrs: []error{badResponse(206, "x")}, wantRequests: 2, wantGot: "0123456789"},
		{name: "failFast: a stream that made progress is retried", rng: "bytes=0-9", consume: streams, failFast: true,
			steps: []step{{body: "01", short: true}, {body: "23456789"}}, wantRequests: 2, wantGot: "0123456789"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := newScriptServer(t, tc.steps...)
			f := newTestFetcher(t, Config{Retries: 2, RetryBaseDelay: time.Millisecond})
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			var sleeps []time.Duration
			rt := &retryTransport{next: plainTransport(t), f: f, sleep: func(ctx context.Context, d time.Duration) error {
				sleeps = append(sleeps, d)
				if tc.cancel {
					cancel()
				}
				return sleepCtx(ctx, min(d, time.Millisecond))
			}}
			var got []byte
			attempts := 0
			c := &consumer{read: func(resp *http.Response) error {
				attempts++
				if attempts <= len(tc.readErrs) {
					return tc.readErrs[attempts-1]
				}
				if resp.StatusCode != http.StatusOK {
					return statusError(resp.StatusCode)
				}
				p := make([]byte, 4)
				for {
					n, err := resp.Body.Read(p)
					got = append(got, p[:n]...)
					if err == io.EOF {
						return nil
					}
					if err != nil {
						if tc.consume != streams {
							got = nil
						}
						return shortBody(err)
					}
				}
			}}
			if tc.consume == streams {
				c.received = func() int64 { return int64(len(got)) }
			}
			if tc.consume != none {
				ctx = withConsumer(ctx, c)
			}
			fastFailed := false
			if tc.failFast {
				ctx = context.WithValue(ctx, failFastKey{}, func() { fastFailed = true })
			}
			var body io.Reader
			if tc.body != "" {
				body = strings.NewReader(tc.body)
			}
			req, err := http.NewRequestWithContext(ctx, cmpMethod(tc.method), srv.URL+"/v2/repo/blobs/sha256:ab", body)
			if err != nil {
				t.Fatal(err)
			}
			if tc.noGetBody {
				req.GetBody = nil
			}
			if tc.rng != "" {
				req.Header.Set("Range", tc.rng)
			}
			resp, err := rt.RoundTrip(req)
			if resp != nil {
				_, _ = io.ReadAll(resp.Body)
				resp.Body.Close()
			}
			seen := srv.requests()
			if len(seen) != tc.wantRequests {
				t.Errorf("%d requests, want %d", len(seen), tc.wantRequests)
			}
			if tc.wantKind == nil {
				if err != nil {
					t.Fatalf("err = %v, want success", err)
				}
			} else {
				var re *RequestError
				isRE := errors.As(err, &re)
				switch {
				case !errors.Is(err, tc.wantKind):
					t.Errorf("err = %v, want %v", err, tc.wantKind)
				case isRE == tc.wantRaw:
					t.Errorf("err = %#v: a *RequestError is wanted: %v", err, !tc.wantRaw)
				case isRE && (re.Attempts != tc.wantRequests || re.Status != tc.wantStatus || re.Digest != "sha256:ab"):
					t.Errorf("err = %+v, want %d attempts, status %d, the blob's digest", re, tc.wantRequests, tc.wantStatus)
				}
			}
			if tc.wantSleeps != nil && !slices.Equal(sleeps, tc.wantSleeps) {
				t.Errorf("slept %v, want %v", sleeps, tc.wantSleeps)
			}
			var ranges, bodies []string
			for _, s := range seen {
				ranges, bodies = append(ranges, s.rng), append(bodies, s.body)
			}
			if tc.wantRanges != nil && !slices.Equal(ranges, tc.wantRanges) {
				t.Errorf("ranges %q, want %q", ranges, tc.wantRanges)
			}
			if tc.wantBodies != nil && !slices.Equal(bodies, tc.wantBodies) {
				t.Errorf("bodies %q, want %q", bodies, tc.wantBodies)
			}
			if fastFailed != tc.wantFailFast {
				t.Errorf("failFast called: %v, want %v", fastFailed, tc.wantFailFast)
			}
			if tc.wantGot != "" && string(got) != tc.wantGot {
				t.Errorf("consumer got %q, want %q", got, tc.wantGot)
			}
		})
	}
}

func cmpMethod(m string) string {
	if m == "" {
		return http.MethodGet
	}
	return m
}

// TestRetryTransportSlot: a response handed over without a consumer holds
// the host's slot until its body is closed.
func TestRetryTransportSlot(t *testing.T) {
	srv := newScriptServer(t, step{body: "x"})
	f := newTestFetcher(t, Config{MaxConnsPerHost: 1})
	rt := &retryTransport{next: plainTransport(t), f: f}
	resp, err := get(t, context.Background(), rt, srv.URL+"/v2/x")
	if err != nil {
		t.Fatal(err)
	}
	hs := f.host(strings.TrimPrefix(srv.URL, "http://"))
	if len(hs.sem) != 1 {
		t.Errorf("slots held with the body open: %d, want 1", len(hs.sem))
	}
	resp.Body.Close()
	if len(hs.sem) != 0 {
		t.Errorf("slots held after Close: %d, want 0", len(hs.sem))
	}
}

// TestRetryAfter: the forms of Retry-After, and its bound.
func TestRetryAfter(t *testing.T) {
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	for _, tc := range []struct {
		name, v string
		want    time.Duration
	}{
		{"none", "", 0},
		{"seconds", "2", 2 * time.Second},
		{"zero", "0", 0},
		{"negative", "-5", 0},
		{"over the bound", "86400", maxRetryAfter},
		{"date", now.Add(4 * time.Second).Format(http.TimeFormat), 4 * time.Second},
		{"date past", now.Add(-time.Hour).Format(http.TimeFormat), 0},
		{"date over the bound", now.Add(time.Hour).Format(http.TimeFormat), maxRetryAfter},
		{"garbage", "soon", 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := http.Header{}
			if tc.v != "" {
				h.Set("Retry-After", tc.v)
			}
			if got := retryAfter(h, now); got != tc.want {
				t.Errorf("retryAfter(%q) = %v, want %v", tc.v, got, tc.want)
			}
		})
	}
}
