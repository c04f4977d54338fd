package ops

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
)

// Fetch GETs /status from a daemon: target is a unix socket path or an
// http(s) URL. It returns the body as sent (JSON of a Report).
func Fetch(ctx context.Context, target string) ([]byte, error) {
	client := &http.Client{}
	url := strings.TrimSuffix(target, "/") + "/status"
	if !strings.HasPrefix(target, "http://") && !strings.HasPrefix(target, "https://") {
		client.Transport = &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", target)
		}}
		url = "http://lazysnap/status"
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	resp, err := client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("is lazysnap serve running? %w", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("%s: %s: %s", target, resp.Status, bytes.TrimSpace(body[:min(len(body), 200)]))
	}
	return body, nil
}

// Handler serves GET /metrics from m and, unless report is nil, GET
// /status: the report as indented JSON, what Fetch reads.
func Handler(m *Metrics, report func(context.Context) Report) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", m.Handler())
	if report == nil {
		return mux
	}
	mux.HandleFunc("GET /status", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		_ = enc.Encode(report(r.Context()))
	})
	return mux
}
