package fusemanager_test

import (
	"context"
	"net"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/lazysnap/lazysnap/fusemanager"
	"github.com/lazysnap/lazysnap/ops"
)

// TestSupervise: a manager that stops answering is started again, each
// start reported; Supervise returns when its context ends. The manager's
// up gauge follows it.
func TestSupervise(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "fm.sock")
	var (
		mu  sync.Mutex
		srv *http.Server
	)
	serve := func() {
		l, err := net.Listen("unix", sock)
		if err != nil {
			t.Error(err)
			return
		}
		s := &http.Server{Handler: fusemanager.Handler(fusemanager.Service{Health: fusemanager.Health{PID: 42, Version: "v"}, Metrics: ops.NewMetrics("fuse-manager", "v").Handler()})}
		mu.Lock()
		srv = s
		mu.Unlock()
		go s.Serve(l)
	}
	stop := func() {
		mu.Lock()
		defer mu.Unlock()
		srv.Close()
	}
	defer stop()
	fs := fusemanager.NewFS(fusemanager.NewClient(sock), func() (<-chan error, error) {
		serve()
		return make(chan error), nil
	})
	met := ops.NewMetrics("", "test")
	if err := fs.Client().GatherInto(met); err != nil {
		t.Fatal(err)
	}
	up := func(want string) {
		t.Helper()
		rec := httptest.NewRecorder()
		met.Handler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/metrics", nil))
		if !strings.Contains(rec.Body.String(), "\nlazysnap_fuse_manager_up "+want+"\n") {
			t.Errorf("lazysnap_fuse_manager_up is not %s:\n%s", want, rec.Body.String())
		}
	}
	serve()
	up("1")

	ctx, cancel := context.WithCancel(context.Background())
	started := make(chan fusemanager.Health)
	done := make(chan struct{})
	go func() {
		defer close(done)
		fs.Supervise(ctx, 10*time.Millisecond, func(h fusemanager.Health, err error) {
			if err != nil {
				t.Errorf("starting a manager: %v", err)
			}
			started <- h
		})
	}()
	for range 2 {
		stop() // the manager is gone: the next check starts one
		select {
		case h := <-started:
			if h.PID != 42 {
				t.Fatalf("started %+v", h)
			}
		case <-time.After(30 * time.Second):
			t.Fatal("no manager started")
		}
	}
	cancel()
	<-done
	stop()
	up("0")
}
