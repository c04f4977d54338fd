package fusemanager

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/containerd/containerd/v2/core/snapshots"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	"github.com/lazysnap/lazysnap/fetcher"
	"github.com/lazysnap/lazysnap/internal/sockets"
	"github.com/lazysnap/lazysnap/ops"
	"github.com/lazysnap/lazysnap/snapshotter"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// Request is the body of mount, check, unmount and usage.
type Request struct {
	Mountpoint string            `json:"mountpoint"`
	Labels     map[string]string `json:"labels,omitempty"`
}

// namespaceHeader carries the containerd namespace of serve's call (as
// containerd named it to the snapshotter) to the manager.
const namespaceHeader = "Containerd-Namespace"

// Error is the body of a failed call. Reason, when set, is the
// snapshotter.Reason the error wraps, so that serve counts the fallback
// under the same reason as in-process.
type Error struct {
	Error  string `json:"error"`
	Reason string `json:"reason,omitempty"`
}

// PullAuthRequest is the body of POST /pullauth: the auth of a CRI pull
// of Image, kept in the manager's memory for the fetches of that image's
// layers (never written anywhere).
type PullAuthRequest struct {
	Image string           `json:"image"`
	Auth  fetcher.PullAuth `json:"auth"`
}

// PullAuthRevert is the body of POST /pullauth/revert: undo the
// PullAuthRequest that answered Generation (its pull failed).
type PullAuthRevert struct {
	Image      string `json:"image"`
	Generation uint64 `json:"generation"`
}

// PullAuthResponse answers POST /pullauth.
type PullAuthResponse struct {
	Generation uint64 `json:"generation"`
}

// Health is GET /healthz.
type Health struct {
	PID     int    `json:"pid"`
	Version string `json:"version"`
	Root    string `json:"root"`
}

// Client speaks the fuse manager protocol.
type Client struct {
	sock string
	hc   *http.Client
}

func NewClient(sock string) *Client {
	return &Client{sock: sock, hc: &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", sock)
		},
		MaxIdleConnsPerHost: 16,
	}}}
}

// callError is a failed call whose error the manager reported; it
// unwraps to the snapshotter.Reason the manager's error wrapped, if any.
type callError struct {
	msg    string
	reason snapshotter.Reason
}

func (e *callError) Error() string { return e.msg }

func (e *callError) Unwrap() error {
	if e.reason == "" {
		return nil
	}
	return e.reason
}

// do sends one request; a non-2xx answer becomes an *callError.
func (c *Client) do(ctx context.Context, method, path string, in, out any) error {
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
	if ns, ok := namespaces.Namespace(ctx); ok && ns != "" {
		req.Header.Set(namespaceHeader, ns) // containerd's, for the manager's calls to it
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
		var me Error
		if json.Unmarshal(b, &me) != nil || me.Error == "" {
			me.Error = fmt.Sprintf("fuse manager: %s: %s", resp.Status, bytes.TrimSpace(b[:min(len(b), 200)]))
		}
		return &callError{msg: me.Error, reason: snapshotter.Reason(me.Reason)}
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

func (c *Client) Health(ctx context.Context) (Health, error) {
	var h Health
	err := c.do(ctx, http.MethodGet, "/healthz", nil, &h)
	return h, err
}

// NotListening reports whether err says nothing listens on the socket, so
// that the request did not reach a manager.
func NotListening(err error) bool {
	return errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.ENOENT)
}

// FS is the snapshotter.FileSystem of a process whose layers a fuse
// manager serves. When no manager listens it starts one (start) and
// retries; without start it waits for one that a supervisor (a systemd
// unit of its own) starts, up to ManagerWait.
type FS struct {
	c     *Client
	start func() (<-chan error, error) // starts a manager process, telling when it exits; nil: a supervisor does
	mu    sync.Mutex                   // one start at a time
}

// ManagerWait bounds how long Ensure waits for a manager to answer.
const ManagerWait = 30 * time.Second

// NewFS returns the FileSystem of the manager c reaches. start, when not
// nil, starts a manager process and returns a channel that receives its
// exit; FS calls it when no manager listens. With a nil start FS never
// starts one and waits for one to answer.
func NewFS(c *Client, start func() (<-chan error, error)) *FS { return &FS{c: c, start: start} }

// Client is the client of the manager.
func (m *FS) Client() *Client { return m.c }

var (
	_ snapshotter.FileSystem = (*FS)(nil)
	_ snapshotter.Usager     = (*FS)(nil)
	_ snapshotter.Cleaner    = (*FS)(nil)
	_ snapshotter.Puller     = (*FS)(nil)
)

func (m *FS) call(ctx context.Context, path string, req any, out any) error {
	err := m.c.do(ctx, http.MethodPost, path, req, out)
	if !NotListening(err) {
		return err
	}
	if _, serr := m.Ensure(ctx); serr != nil {
		return fmt.Errorf("%w; starting a fuse manager: %w", err, serr)
	}
	return m.c.do(ctx, http.MethodPost, path, req, out)
}

// Ensure starts a manager unless one answers (or, without start, lets its
// supervisor start it), waits until it does, up to ManagerWait, and returns
// what it says of itself.
func (m *FS) Ensure(ctx context.Context) (Health, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if h, err := m.c.Health(ctx); err == nil {
		return h, nil
	}
	var exited <-chan error // nil: started by a supervisor, not ours
	if m.start != nil {
		var err error
		if exited, err = m.start(); err != nil {
			return Health{}, err
		}
	}
	ctx, cancel := context.WithTimeout(ctx, ManagerWait)
	defer cancel()
	for {
		h, err := m.c.Health(ctx)
		if err == nil {
			return h, nil
		}
		select {
		case <-ctx.Done():
			if m.start == nil {
				return Health{}, fmt.Errorf("no fuse manager answers on %s, and this process starts none (its service must run it): %w", m.c.Socket(), err)
			}
			return Health{}, fmt.Errorf("fuse manager did not answer: %w", err)
		case xerr := <-exited:
			return Health{}, fmt.Errorf("fuse manager exited at start: %w (see its log)", xerr)
		case <-time.After(20 * time.Millisecond):
		}
	}
}

func (m *FS) Mount(ctx context.Context, mountpoint string, labels map[string]string) error {
	return m.call(ctx, "/mount", Request{Mountpoint: mountpoint, Labels: labels}, nil)
}

func (m *FS) Check(ctx context.Context, mountpoint string, labels map[string]string) error {
	return m.call(ctx, "/check", Request{Mountpoint: mountpoint, Labels: labels}, nil)
}

func (m *FS) Unmount(ctx context.Context, mountpoint string) error {
	return m.call(ctx, "/unmount", Request{Mountpoint: mountpoint}, nil)
}

func (m *FS) Cleanup(ctx context.Context) error {
	return m.call(ctx, "/cleanup", nil, nil)
}

func (m *FS) Usage(ctx context.Context, mountpoint string) (snapshots.Usage, error) {
	var u snapshots.Usage
	err := m.call(ctx, "/usage", Request{Mountpoint: mountpoint}, &u)
	return u, err
}

// Pull has the manager pull a layer that is not lazy into dir (POST
// /pull): the manager holds the registry connections and credentials.
func (m *FS) Pull(ctx context.Context, req snapshotter.PullRequest) (snapshotter.PullResult, error) {
	var res snapshotter.PullResult
	err := m.call(ctx, "/pull", req, &res)
	return res, err
}

// SetPullAuth hands the manager the auth of a CRI pull of image
// (POST /pullauth), starting a manager when none listens, and returns its
// generation, for RevertPullAuth.
func (m *FS) SetPullAuth(ctx context.Context, image string, auth fetcher.PullAuth) (uint64, error) {
	var resp PullAuthResponse
	err := m.call(ctx, "/pullauth", PullAuthRequest{Image: image, Auth: auth}, &resp)
	return resp.Generation, err
}

// RevertPullAuth undoes SetPullAuth's generation gen for image, unless a
// later pull replaced it (POST /pullauth/revert).
func (m *FS) RevertPullAuth(ctx context.Context, image string, gen uint64) error {
	return m.call(ctx, "/pullauth/revert", PullAuthRevert{Image: image, Generation: gen}, nil)
}

// ClaimSocket refuses to start when a manager answers at path (two
// managers would both serve the same root), or anything else does; a
// stale socket is removed (sockets.Claim).
func ClaimSocket(ctx context.Context, path string) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return err
	}
	c := NewClient(path)
	if h, err := c.Health(ctx); err == nil {
		return fmt.Errorf("a fuse manager (pid %d) already serves %s", h.PID, path)
	}
	return sockets.Claim(ctx, "unix", path)
}

// Service is what a fuse manager serves.
type Service struct {
	FS interface {
		snapshotter.FileSystem
		snapshotter.Usager
		snapshotter.Cleaner
		snapshotter.Puller
	}
	// PullAuths keeps CRI pulls' auths (POST /pullauth); nil refuses them.
	PullAuths *fetcher.PullAuths
	Health    Health                               // GET /healthz
	Metrics   http.Handler                         // GET /metrics
	Status    func(ctx context.Context) ops.Report // GET /status
}

// Handler serves the manager protocol for svc, and Go's profiles under
// /debug/pprof/.
func Handler(svc Service) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, svc.Health)
	})
	call := func(fn func(ctx context.Context, req Request) (any, error)) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			var req Request
			if err := json.NewDecoder(io.LimitReader(r.Body, 1<<20)).Decode(&req); err != nil || req.Mountpoint == "" {
				writeJSON(w, http.StatusBadRequest, Error{Error: fmt.Sprintf("bad request: %v", err)})
				return
			}
			out, err := fn(r.Context(), req)
			if err != nil {
				me := Error{Error: err.Error()}
				var reason snapshotter.Reason
				if errors.As(err, &reason) {
					me.Reason = string(reason)
				}
				writeJSON(w, http.StatusInternalServerError, me)
				return
			}
			if out == nil {
				w.WriteHeader(http.StatusNoContent)
				return
			}
			writeJSON(w, http.StatusOK, out)
		}
	}
	mux.HandleFunc("POST /mount", call(func(ctx context.Context, req Request) (any, error) {
		return nil, svc.FS.Mount(ctx, req.Mountpoint, req.Labels)
	}))
	mux.HandleFunc("POST /check", call(func(ctx context.Context, req Request) (any, error) {
		return nil, svc.FS.Check(ctx, req.Mountpoint, req.Labels)
	}))
	mux.HandleFunc("POST /unmount", call(func(ctx context.Context, req Request) (any, error) {
		return nil, svc.FS.Unmount(ctx, req.Mountpoint)
	}))
	mux.HandleFunc("POST /usage", call(func(ctx context.Context, req Request) (any, error) {
		u, err := svc.FS.Usage(ctx, req.Mountpoint)
		if err != nil {
			return nil, err
		}
		return u, nil
	}))
	mux.HandleFunc("POST /pull", func(w http.ResponseWriter, r *http.Request) {
		var req snapshotter.PullRequest
		if err := json.NewDecoder(io.LimitReader(r.Body, 1<<20)).Decode(&req); err != nil || req.Dir == "" {
			writeJSON(w, http.StatusBadRequest, Error{Error: fmt.Sprintf("bad pull request: %v", err)})
			return
		}
		ctx := r.Context()
		if ns := r.Header.Get(namespaceHeader); ns != "" {
			ctx = namespaces.WithNamespace(ctx, ns)
		}
		res, err := svc.FS.Pull(ctx, req)
		if err != nil {
			writeJSON(w, http.StatusInternalServerError, Error{Error: err.Error()})
			return
		}
		writeJSON(w, http.StatusOK, res)
	})
	mux.HandleFunc("POST /cleanup", func(w http.ResponseWriter, r *http.Request) {
		if err := svc.FS.Cleanup(r.Context()); err != nil {
			writeJSON(w, http.StatusInternalServerError, Error{Error: err.Error()})
			return
		}
		w.WriteHeader(http.StatusNoContent)
	})
	mux.HandleFunc("POST /pullauth", func(w http.ResponseWriter, r *http.Request) {
		var req PullAuthRequest
		if !decodePullAuth(w, r, svc.PullAuths, &req) {
			return
		}
		gen, err := svc.PullAuths.Set(req.Image, req.Auth)
		if err != nil {
			writeJSON(w, http.StatusBadRequest, Error{Error: err.Error()})
			return
		}
		writeJSON(w, http.StatusOK, PullAuthResponse{Generation: gen})
	})
	mux.HandleFunc("POST /pullauth/revert", func(w http.ResponseWriter, r *http.Request) {
		var req PullAuthRevert
		if !decodePullAuth(w, r, svc.PullAuths, &req) {
			return
		}
		if err := svc.PullAuths.Revert(req.Image, req.Generation); err != nil {
			writeJSON(w, http.StatusBadRequest, Error{Error: err.Error()})
			return
		}
		w.WriteHeader(http.StatusNoContent)
	})
	mux.Handle("GET /metrics", svc.Metrics)
	mux.HandleFunc("GET /status", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, svc.Status(r.Context()))
	})
	// Go's profiles (the socket is root's alone): where the mounts live,
	// goroutines and heap are worth a look
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	return mux
}

// decodePullAuth reads a pull auth call's body into v; false when it has
// answered the call with an error. Errors never quote the body: it holds
// a secret.
func decodePullAuth(w http.ResponseWriter, r *http.Request, pa *fetcher.PullAuths, v any) bool {
	if pa == nil {
		writeJSON(w, http.StatusNotImplemented, Error{Error: "this fuse manager keeps no pull auths"})
		return false
	}
	if err := json.NewDecoder(io.LimitReader(r.Body, 1<<20)).Decode(v); err != nil {
		writeJSON(w, http.StatusBadRequest, Error{Error: fmt.Sprintf("bad pull auth request: %T", err)})
		return false
	}
	return true
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}

// Gatherer gathers the manager's metrics (GET /metrics), for another
// process's registry.
func (c *Client) Gatherer() prometheus.Gatherer { return gatherer{c} }

// Status returns the manager's status report (GET /status).
func (c *Client) Status(ctx context.Context) (ops.Report, error) {
	var rep ops.Report
	var body []byte
	if err := c.do(ctx, http.MethodGet, "/status", nil, &body); err != nil {
		return rep, err
	}
	err := json.Unmarshal(body, &rep)
	return rep, err
}

// Socket is the path of the manager's socket.
func (c *Client) Socket() string { return c.sock }

type gatherer struct{ c *Client }

func (g gatherer) Gather() ([]*dto.MetricFamily, error) {
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

// Status is the status report of the process whose layers a manager
// serves: the manager's report, with that process's snapshotter counters
// and fallbacks added, and the manager's health.
type Status struct {
	Client      *Client
	Version     string // the reporting process's
	Snapshotter func() snapshotter.Stats
	Fallbacks   func() []snapshotter.Fallback
}

// Report assembles the report; a manager that does not answer is
// reported as such (FuseManager.Error), with no layers.
func (s *Status) Report(ctx context.Context) ops.Report {
	var rep ops.Report
	fm := &ops.FuseManager{Address: s.Client.Socket()}
	h, err := s.Client.Health(ctx)
	if err == nil {
		rep, err = s.Client.Status(ctx)
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
	rep.Version, rep.Time, rep.FuseManager = s.Version, time.Now().UTC(), fm
	rep.Snapshotter = ops.SnapshotterStatusOf(s.Snapshotter())
	rep.Images = ops.WithFallbacks(rep.Images, s.Fallbacks())
	return rep
}
