package fetcher

import (
	"context"
	"net"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
)

// TestCloseClosesIdleConnections: Close closes the connections the
// fetcher keeps open between requests (the server sees them closed), also
// when Config.WrapTransport wraps the transport in one that does not pass
// CloseIdleConnections on.
func TestCloseClosesIdleConnections(t *testing.T) {
	for _, tc := range []struct {
		name string
		wrap func(http.RoundTripper) http.RoundTripper
	}{
		{name: "plain"},
		{name: "wrapped", wrap: func(rt http.RoundTripper) http.RoundTripper {
			return roundTripperFunc(rt.RoundTrip) // has no CloseIdleConnections
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			data := randBytes(11, 4096)
			s := &fakeRegistry{data: data, dgst: digest.FromBytes(data)}
			var open atomic.Int64 // connections the server has open
			s.Server = httptest.NewUnstartedServer(http.HandlerFunc(s.serve))
			s.Config.ConnState = func(_ net.Conn, st http.ConnState) {
				switch st {
				case http.StateNew:
					open.Add(1)
				case http.StateClosed, http.StateHijacked:
					open.Add(-1)
				}
			}
			s.Start()
			t.Cleanup(s.Close)
			f := newTestFetcher(t, Config{WrapTransport: tc.wrap})
			b := mustBlob(t, f, s.ref(), s.desc())
			if _, err := b.ReadRange(context.Background(), 0, 100); err != nil {
				t.Fatal(err)
			}
			if open.Load() == 0 {
				t.Fatal("no connection kept open after the read")
			}
			f.Close()
			for deadline := time.Now().Add(10 * time.Second); open.Load() != 0; time.Sleep(time.Millisecond) {
				if time.Now().After(deadline) {
					t.Fatalf("%d connections still open after Close", open.Load())
				}
			}
		})
	}
}

type roundTripperFunc func(*http.Request) (*http.Response, error)

func (f roundTripperFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }
