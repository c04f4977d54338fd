package fusemanager_test

import (
	"context"
	"net"
	"net/http"
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
