package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	snapshotsapi "github.com/containerd/containerd/api/services/snapshots/v1"
	"github.com/lazysnap/lazysnap/internal/sockets"
	"github.com/lazysnap/lazysnap/snapshotter"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
)

// TestServeStopsOnFirstSignal: serve exits on the first SIGTERM within
// shutdownBound (and a margin), whatever it is doing: waiting at start for
// a fuse manager that does not answer, or with a snapshot call in flight
// that waits on a manager's mount that never ends.
func TestServeStopsOnFirstSignal(t *testing.T) {
	for _, tc := range []struct {
		name     string
		healthy  bool // the manager answers /healthz
		inflight bool // a Prepare of a lazy layer is in flight
	}{
		{"at start, the manager silent", false, false},
		{"a mount in flight", true, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			bin := lazysnapBinary(t)
			dir, err := os.MkdirTemp("/tmp", "lzstop-")
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { os.RemoveAll(dir) })
			// the manager: answers /healthz (or not); /mount never returns
			release := make(chan struct{})
			mounting := make(chan struct{}, 1)
			mux := http.NewServeMux()
			mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
				if !tc.healthy {
					<-release
				}
				fmt.Fprintf(w, `{"pid":%d,"version":"dev"}`, os.Getpid())
			})
			mux.HandleFunc("POST /mount", func(w http.ResponseWriter, r *http.Request) {
				mounting <- struct{}{}
				<-release // deaf to the caller's cancellation
			})
			mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusNoContent) })
			msock := filepath.Join(dir, "manager.sock")
			ml, err := sockets.Listen(context.Background(), "unix", msock, 0o600, 0o700)
			if err != nil {
				t.Fatal(err)
			}
			msrv := &http.Server{Handler: mux}
			go msrv.Serve(ml)
			t.Cleanup(func() { close(release); msrv.Close() })

			cfg := filepath.Join(dir, "lazysnap.toml")
			sock := filepath.Join(dir, "lazysnap.sock")
			text := fmt.Sprintf("root = %q\naddress = %q\n[registry]\n  hosts_dir = %q\n[fuse_manager]\n  address = %q\n", filepath.Join(dir, "root"), sock, dir, msock)
			if err := os.WriteFile(cfg, []byte(text), 0o644); err != nil {
				t.Fatal(err)
			}
			cmd := exec.Command(bin, "serve", "--config", cfg, "--start-fuse-manager=false")
			logf, _ := os.Create(filepath.Join(dir, "serve.log"))
			defer logf.Close()
			cmd.Stdout, cmd.Stderr = logf, logf
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			exited, waited := make(chan error, 1), make(chan struct{})
			go func() { exited <- cmd.Wait(); close(waited) }()
			t.Cleanup(func() { cmd.Process.Kill(); <-waited })
			logText := func() string { b, _ := os.ReadFile(filepath.Join(dir, "serve.log")); return string(b) }

			if tc.inflight {
				waitForSocket(t, sock, exited, logText)
				conn, err := grpc.NewClient("unix://"+sock, grpc.WithTransportCredentials(insecure.NewCredentials()))
				if err != nil {
					t.Fatal(err)
				}
				defer conn.Close()
				c := snapshotsapi.NewSnapshotsClient(conn)
				go c.Prepare(context.Background(), &snapshotsapi.PrepareSnapshotRequest{Key: "extract-1 sha256:" + strings.Repeat("a", 64), Labels: map[string]string{
					snapshotter.LabelTargetSnapshotRef: "sha256:" + strings.Repeat("a", 64),
					snapshotter.LabelCRIImageRef:       "reg.example/app:1",
					snapshotter.LabelCRILayerDigest:    "sha256:" + strings.Repeat("b", 64),
				}})
				select {
				case <-mounting:
				case <-time.After(time.Minute):
					t.Fatalf("serve did not ask the manager to mount\n%s", logText())
				}
			} else {
				time.Sleep(500 * time.Millisecond) // serve is waiting for the manager
			}
			start := time.Now()
			cmd.Process.Signal(syscall.SIGTERM)
			select {
			case err := <-exited:
				var xerr *exec.ExitError
				if err != nil && !errors.As(err, &xerr) {
					t.Fatal(err)
				}
				t.Logf("serve exited %v after SIGTERM: %v", time.Since(start).Round(time.Millisecond), err)
			case <-time.After(shutdownBound + 5*time.Second):
				t.Fatalf("serve still running %v after SIGTERM\n%s", shutdownBound+5*time.Second, logText())
			}
		})
	}
}

// waitForSocket waits until something listens on sock.
func waitForSocket(t *testing.T, sock string, exited <-chan error, logText func() string) {
	t.Helper()
	for i := 0; ; i++ {
		if c, err := net.Dial("unix", sock); err == nil {
			c.Close()
			return
		}
		select {
		case err := <-exited:
			t.Fatalf("serve exited: %v\n%s", err, logText())
		case <-time.After(25 * time.Millisecond):
		}
		if i == 2400 {
			t.Fatalf("serve did not listen on %s\n%s", sock, logText())
		}
	}
}

// TestSignalContext: a process stuck after the first SIGTERM (here: it
// ignores its context) exits shutdownBound later with status 1; a second
// SIGTERM ends it at once; without the bound (the fd keeper) only the
// second signal does.
func TestSignalContext(t *testing.T) {
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name    string
		bound   bool
		signals int
		want    string // how it ends: "exit status 1" or "signal: terminated"
	}{
		{"stuck: the bound ends it", true, 1, "exit status 1"},
		{"second signal", true, 2, "signal: terminated"},
		{"keeper: second signal only", false, 2, "signal: terminated"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cmd := exec.Command(self, "-test.run=^TestSignalContextProcess$")
			cmd.Env = append(os.Environ(), fmt.Sprintf("LAZYSNAP_SIGNAL_CONTEXT=%v", tc.bound))
			out, err := cmd.StdoutPipe()
			if err != nil {
				t.Fatal(err)
			}
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			b := make([]byte, 6)
			if n, _ := io.ReadFull(out, b); string(b[:n]) != "ready\n" { // signals are caught
				cmd.Process.Kill()
				cmd.Wait()
				t.Fatalf("the child said %q", b[:n])
			}
			done := make(chan error, 1)
			go func() { done <- cmd.Wait() }()
			start := time.Now()
			for i := 0; i < tc.signals; i++ {
				if i > 0 {
					time.Sleep(200 * time.Millisecond)
				}
				cmd.Process.Signal(syscall.SIGTERM)
			}
			select {
			case err := <-done:
				if err == nil || err.Error() != tc.want {
					t.Fatalf("ended with %v, want %s", err, tc.want)
				}
				t.Logf("ended %v after the first signal: %v", time.Since(start).Round(time.Millisecond), err)
			case <-time.After(shutdownBound + 10*time.Second):
				cmd.Process.Kill()
				<-done
				t.Fatalf("still running %v after the first signal", shutdownBound+10*time.Second)
			}
		})
	}
}

// TestSignalContextProcess is TestSignalContext's child (it does nothing
// in a test run): it takes signals as lazysnap does, then ignores them.
func TestSignalContextProcess(t *testing.T) {
	bound := os.Getenv("LAZYSNAP_SIGNAL_CONTEXT")
	if bound == "" {
		t.Skip("the child process of TestSignalContext")
	}
	ctx, stop := signalContext(os.Stderr, bound == "true")
	defer stop()
	fmt.Println("ready")
	<-ctx.Done()
	select {} // stuck, whatever the signal
}

// TestServeRefusesLiveSockets: serve refuses to start on a socket where
// something answers (containerd's own, another serve) and leaves it be:
// the gRPC address, the status socket, the CRI listen address.
func TestServeRefusesLiveSockets(t *testing.T) {
	for _, tc := range []struct {
		name, key string
	}{
		{"gRPC address", "address"},
		{"status socket", "status_address"},
		{"CRI listen address", "cri.listen_address"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir, err := os.MkdirTemp("/tmp", "lzlive-")
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { os.RemoveAll(dir) })
			live := filepath.Join(dir, "live.sock")
			l, err := net.Listen("unix", live)
			if err != nil {
				t.Fatal(err)
			}
			defer l.Close()
			addr, status, criAddr := filepath.Join(dir, "lazysnap.sock"), filepath.Join(dir, "status.sock"), filepath.Join(dir, "cri.sock")
			switch tc.key {
			case "address":
				addr = live
			case "status_address":
				status = live
			default:
				criAddr = live
			}
			cfg := filepath.Join(dir, "lazysnap.toml")
			text := fmt.Sprintf("root = %q\naddress = %q\nstatus_address = %q\n[registry]\n  hosts_dir = %q\n[fuse_manager]\n  enable = false\n[cri]\n  listen_address = %q\n  containerd_cri_address = %q\n",
				filepath.Join(dir, "root"), addr, status, dir, criAddr, filepath.Join(dir, "containerd.sock"))
			if err := os.WriteFile(cfg, []byte(text), 0o644); err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			err = runServe(ctx, []string{"--config", cfg}, io.Discard, io.Discard)
			if !errors.Is(err, sockets.ErrInUse) {
				t.Fatalf("serve on a live %s: %v, want %v", tc.key, err, sockets.ErrInUse)
			}
			c, err := net.Dial("unix", live)
			if err != nil {
				t.Fatalf("the live socket after serve's refusal: %v", err)
			}
			c.Close()
		})
	}
}
