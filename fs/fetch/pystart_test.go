package fetch

import (
	"slices"
	"testing"
)

// TestPyStartPaths: only an interpreter named python3.N has startup files;
// site's .pyc is among them before 3.11 (frozen after).
func TestPyStartPaths(t *testing.T) {
	for _, tc := range []struct {
		name     string
		want     []string // among the paths
		notWant  []string
		wantNone bool
	}{
		{name: "python3.11", want: []string{"/usr/lib/python3.11/encodings/__pycache__/__init__.cpython-311.pyc", "/usr/local/lib/python3.11/encodings/__pycache__/utf_8.cpython-311.pyc",
			"/usr/lib/python3.11/__pycache__/sitecustomize.cpython-311.pyc", "/usr/lib/x86_64-linux-gnu/gconv/gconv-modules.cache", "/etc/localtime"},
			notWant: []string{"/usr/lib/python3.11/__pycache__/site.cpython-311.pyc"}},
		{name: "python3.9", want: []string{"/usr/lib/python3.9/__pycache__/site.cpython-39.pyc"}},
		{name: "python3", wantNone: true},
		{name: "python2.7", wantNone: true},
		{name: "python3.x", wantNone: true},
		{name: "python3.011", wantNone: true},
		{name: "pythonic", wantNone: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := pyStartPaths(tc.name, "x86_64-linux-gnu")
			if tc.wantNone != (got == nil) {
				t.Fatalf("pyStartPaths(%q) = %q", tc.name, got)
			}
			for _, p := range tc.want {
				if !slices.Contains(got, p) {
					t.Errorf("missing %s", p)
				}
			}
			for _, p := range tc.notWant {
				if slices.Contains(got, p) {
					t.Errorf("has %s", p)
				}
			}
		})
	}
}
