package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/containerd/containerd/v2/core/snapshots"
	"github.com/lazysnap/lazysnap/ops"
	"github.com/lazysnap/lazysnap/snapshotter"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// managerClient speaks the fuse manager protocol (fusemanager.go).
type managerClient struct {
	sock string
	hc   *http.Client
}

func newManagerClient(sock string) *managerClient {
	return &managerClient{sock: sock, hc: &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", sock)
		},
		MaxIdleConnsPerHost: 16,
	}}}
}

// errManagerCall is a failed call whose error the manager reported; it
// unwraps to the snapshotter.Reason the manager's error wrapped, if any.
type errManagerCall struct {
	msg    string
	reason snapshotter.Reason
}

func (e *errManagerCall) Error() string { return e.msg }

func (e *errManagerCall) Unwrap() error {
	if e.reason == "" {
		return nil
	}
	return e.reason
}

// do sends one request; a non-2xx answer becomes an *errManagerCall.
func (c *managerClient) do(ctx context.Context, method, path string, in, out any) error {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return err
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, "http://fuse-manager"+path, body)
	if err != nil {
		return err
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return fmt.Errorf("fuse manager at %s: %w", c.sock, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return fmt.Errorf("fuse manager at %s: %w", c.sock, err)
	}
	if resp.StatusCode/100 != 2 {
		var me managerError
		if json.Unmarshal(b, &me) != nil || me.Error == "" {
			me.Error = fmt.Sprintf("fuse manager: %s: %s", resp.Status, bytes.TrimSpace(b[:min(len(b), 200)]))
		}
		return &errManagerCall{msg: me.Error, reason: snapshotter.Reason(me.Reason)}
	}
	switch o := out.(type) {
	case nil:
		return nil
	case *[]byte:
		*o = b
		return nil
	default:
		return json.Unmarshal(b, out)
	}
}

func (c *managerClient) health(ctx context.Context) (managerHealth, error) {
	var h managerHealth
	err := c.do(ctx, http.MethodGet, "/healthz", nil, &h)
	return h, err
}

// notListening reports whether err says nothing listens on the socket, so
// that the request did not reach a manager.
func notListening(err error) bool {
	return errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.ENOENT)
}

// managerFS is serve's snapshotter.FileSystem when a fuse manager serves
// the layers. When no manager listens it starts one (start) and retries.
type managerFS struct {
	c     *managerClient
	start func() (<-chan error, error) // starts a manager process, telling when it exits; nil: never
	mu    sync.Mutex                   // one start at a time
}

var (
	_ snapshotter.FileSystem = (*managerFS)(nil)
	_ snapshotter.Usager     = (*managerFS)(nil)
	_ snapshotter.Cleaner    = (*managerFS)(nil)
)

func (m *managerFS) call(ctx context.Context, path string, req any, out any) error {
	err := m.c.do(ctx, http.MethodPost, path, req, out)
	if m.start == nil || !notListening(err) {
		return err
	}
	if _, serr := m.ensure(ctx); serr != nil {
		return fmt.Errorf("%w; starting a fuse manager: %w", err, serr)
	}
	return m.c.do(ctx, http.MethodPost, path, req, out)
}

// ensure starts a manager unless one answers, waits until it does, and
// returns what it says of itself.
func (m *managerFS) ensure(ctx context.Context) (managerHealth, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if h, err := m.c.health(ctx); err == nil {
		return h, nil
	}
	exited, err := m.start()
	if err != nil {
		return managerHealth{}, err
	}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	for {
		h, err := m.c.health(ctx)
		if err == nil {
			return h, nil
		}
		select {
		case <-ctx.Done():
			return managerHealth{}, fmt.Errorf("fuse manager did not answer: %w", err)
		case xerr := <-exited:
			return managerHealth{}, fmt.Errorf("fuse manager exited at start (%v): see %s", xerr, managerLogName)
		case <-time.After(20 * time.Millisecond):
		}
	}
}

func (m *managerFS) Mount(ctx context.Context, mountpoint string, labels map[string]string) error {
	return m.call(ctx, "/mount", managerRequest{Mountpoint: mountpoint, Labels: labels}, nil)
}

func (m *managerFS) Check(ctx context.Context, mountpoint string, labels map[string]string) error {
	return m.call(ctx, "/check", managerRequest{Mountpoint: mountpoint, Labels: labels}, nil)
}

func (m *managerFS) Unmount(ctx context.Context, mountpoint string) error {
	return m.call(ctx, "/unmount", managerRequest{Mountpoint: mountpoint}, nil)
}

func (m *managerFS) Cleanup(ctx context.Context) error {
	return m.call(ctx, "/cleanup", nil, nil)
}

func (m *managerFS) Usage(ctx context.Context, mountpoint string) (snapshots.Usage, error) {
	var u snapshots.Usage
	err := m.call(ctx, "/usage", managerRequest{Mountpoint: mountpoint}, &u)
	return u, err
}

// managerStarter returns the function that starts `lazysnap fuse-manager`
// for serve: this executable, with serve's configuration file and root, in
// a session of its own (so that it outlives serve and its terminal), its
// output appended to fusemanager.log in the root directory, which the
// manager rotates.
func managerStarter(cfgPath, root string) func() (<-chan error, error) {
	return func() (<-chan error, error) {
		exe, err := os.Executable()
		if err != nil {
			return nil, err
		}
		// it runs in /: make the paths absolute
		if root, err = filepath.Abs(root); err != nil {
			return nil, err
		}
		logPath := filepath.Join(root, managerLogName)
		args := []string{"fuse-manager", "--root", root, "--log-file", logPath}
		if cfgPath != "" {
			p, err := filepath.Abs(cfgPath)
			if err != nil {
				return nil, err
			}
			args = append(args, "--config", p)
		}
		if err := os.MkdirAll(root, 0o700); err != nil {
			return nil, err
		}
		// until the manager has opened --log-file itself (a bad flag, say)
		logf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
		if err != nil {
			return nil, err
		}
		defer logf.Close()
		cmd := exec.Command(exe, args...)
		cmd.Stdout, cmd.Stderr = logf, logf
		cmd.Dir = "/"
		cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
		if err := cmd.Start(); err != nil {
			return nil, fmt.Errorf("start fuse manager: %w", err)
		}
		exited := make(chan error, 1)
		go func() { exited <- cmd.Wait() }() // and reap it should it exit while serve runs
		return exited, nil
	}
}

// managerStatus is serve's status report when a fuse manager serves the
// layers: the manager's report, with the snapshotter's counters added.
type managerStatus struct {
	c         *managerClient
	sn        func() snapshotter.Stats
	fallbacks func() []snapshotter.Fallback
}

func (s *managerStatus) Report(ctx context.Context) ops.Report {
	var rep ops.Report
	fm := &ops.FuseManager{Address: s.c.sock}
	h, err := s.c.health(ctx)
	if err == nil {
		var body []byte
		if err = s.c.do(ctx, http.MethodGet, "/status", nil, &body); err == nil {
			err = json.Unmarshal(body, &rep)
		}
	}
	if err != nil {
		rep = ops.Report{}
		fm.Error = err.Error()
	} else {
		fm.PID, fm.Version = h.PID, h.Version
	}
	if rep.Images == nil {
		rep.Images = []ops.Image{}
	}
	rep.Version, rep.Time, rep.FuseManager = version, time.Now().UTC(), fm
	rep.Snapshotter = ops.SnapshotterStatusOf(s.sn())
	rep.Images = ops.WithFallbacks(rep.Images, s.fallbacks())
	return rep
}

// managerGatherer gathers a fuse manager's metrics for serve's /metrics.
type managerGatherer struct{ c *managerClient }

func (g managerGatherer) Gather() ([]*dto.MetricFamily, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var body []byte
	if err := g.c.do(ctx, http.MethodGet, "/metrics", nil, &body); err != nil {
		return nil, err
	}
	// lazysnap's metric names are legacy Prometheus names, which is what
	// the parser of prometheus/common 0.42 accepted; since 0.6x a zero
	// TextParser panics for want of a validation scheme
	p := expfmt.NewTextParser(model.LegacyValidation)
	mfs, err := p.TextToMetricFamilies(bytes.NewReader(body))
	if err != nil {
		return nil, fmt.Errorf("fuse manager metrics: %w", err)
	}
	out := make([]*dto.MetricFamily, 0, len(mfs))
	for _, mf := range mfs {
		out = append(out, mf)
	}
	slices.SortFunc(out, func(a, b *dto.MetricFamily) int { return strings.Compare(a.GetName(), b.GetName()) })
	return out, nil
}
