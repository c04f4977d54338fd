package fusemanager_test

import (
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/lazysnap/lazysnap/fusemanager"
)

// TestEnsureWaitsForSupervisor: an FS that starts no manager (its own
// service runs it) waits for one to answer instead, and says so when
// none does.
func TestEnsureWaitsForSupervisor(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "fm.sock")
	fs := fusemanager.NewFS(fusemanager.NewClient(sock), nil)

	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	if _, err := fs.Ensure(ctx); err == nil || !strings.Contains(err.Error(), "starts none") {
		t.Fatalf("Ensure with no manager: %v, want one saying it starts none", err)
	}

	// the supervisor starts the manager while Ensure waits
	ready := make(chan *http.Server, 1)
	go func() {
		l, err := net.Listen("unix", sock)
		if err != nil {
			t.Error(err)
			ready <- nil
			return
		}
		srv := &http.Server{Handler: fusemanager.Handler(fusemanager.Service{Health: fusemanager.Health{PID: 42, Version: "v"}, Metrics: http.NotFoundHandler()})}
		ready <- srv
		srv.Serve(l)
	}()
	h, err := fs.Ensure(context.Background())
	if srv := <-ready; srv != nil {
		defer srv.Close()
	}
	if err != nil || h.PID != 42 {
		t.Fatalf("Ensure: %+v, %v; want the manager the supervisor started", h, err)
	}
}

// TestHandlerProfiles: the manager's socket serves Go's profiles, to see
// its goroutines where the mounts live.
func TestHandlerProfiles(t *testing.T) {
	srv := httptest.NewServer(fusemanager.Handler(fusemanager.Service{Metrics: http.NotFoundHandler()}))
	defer srv.Close()
	resp, err := http.Get(srv.URL + "/debug/pprof/goroutine?debug=1")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK || !strings.Contains(string(body), "goroutine profile:") {
		t.Fatalf("GET /debug/pprof/goroutine: %s, %v:\n%.200s", resp.Status, err, body)
	}
}
