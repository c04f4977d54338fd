package cri

import (
	"testing"

	"github.com/lazysnap/lazysnap/fetcher"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// TestPullAuth: what is kept of a CRI AuthConfig (what containerd uses;
// registry_token is ignored as containerd ignores it).
func TestPullAuth(t *testing.T) {
	for _, tc := range []struct {
		name string
		in   *runtimeapi.AuthConfig
		want fetcher.PullAuth
	}{
		{"anonymous", nil, fetcher.PullAuth{}},
		{"password", &runtimeapi.AuthConfig{Username: "u", Password: "p", ServerAddress: "reg.example"},
			fetcher.PullAuth{Username: "u", Password: "p", ServerAddress: "reg.example"}},
		{"auth and identity token", &runtimeapi.AuthConfig{Auth: "dTpw", IdentityToken: "id"}, fetcher.PullAuth{Auth: "dTpw", IdentityToken: "id"}},
		{"registry token only", &runtimeapi.AuthConfig{RegistryToken: "tok"}, fetcher.PullAuth{}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := pullAuth(tc.in); got != tc.want {
				t.Fatalf("got %+v, want %+v", got, tc.want)
			}
		})
	}
}

func TestDial(t *testing.T) {
	for _, addr := range []string{"/run/containerd/containerd.sock", "unix:///run/containerd/containerd.sock"} {
		conn, err := Dial(addr)
		if err != nil {
			t.Fatalf("Dial(%q): %v", addr, err)
		}
		if got := conn.Target(); got != "unix:///run/containerd/containerd.sock" {
			t.Fatalf("Dial(%q) targets %q", addr, got)
		}
		conn.Close()
	}
}
