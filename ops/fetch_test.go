package ops

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// TestHandler: /metrics always, /status (what Fetch reads) only with a
// report: the TCP metrics address serves no status unless asked.
func TestHandler(t *testing.T) {
	m := NewMetrics("", "test")
	report := func(context.Context) Report { return Report{Version: "v1"} }
	for _, tc := range []struct {
		name   string
		report func(context.Context) Report
		status bool
	}{
		{"metrics and status", report, true},
		{"metrics only", nil, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := httptest.NewServer(Handler(m, tc.report))
			defer srv.Close()
			resp, err := http.Get(srv.URL + "/metrics")
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("GET /metrics: %s", resp.Status)
			}
			body, err := Fetch(context.Background(), srv.URL)
			if !tc.status {
				if err == nil || !strings.Contains(err.Error(), "404") {
					t.Fatalf("GET /status served without a report: %s, %v", body, err)
				}
				return
			}
			var rep Report
			if err != nil || json.Unmarshal(body, &rep) != nil || rep.Version != "v1" {
				t.Fatalf("GET /status: %s, %v", body, err)
			}
		})
	}
}
