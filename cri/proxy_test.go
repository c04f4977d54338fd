package cri

import (
	"context"
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

// TestLocalAuths: a pull's auth reaches the process's PullAuths, where
// its fetcher asks for credentials; reverting the pull's generation takes
// it back.
func TestLocalAuths(t *testing.T) {
	ctx := context.Background()
	pa := fetcher.NewPullAuths()
	store := LocalAuths(pa)
	gen, err := store.SetPullAuth(ctx, "reg.example/team/app:1", fetcher.PullAuth{Username: "u", Password: "p"})
	if err != nil {
		t.Fatal(err)
	}
	user, secret, ok, err := pa.Credentials(ctx, "reg.example/team/app:2", "reg.example", false)
	if err != nil || !ok || user != "u" || secret != "p" {
		t.Fatalf("credentials after the pull: %q %q %v %v", user, secret, ok, err)
	}
	if err := store.RevertPullAuth(ctx, "reg.example/team/app:1", gen); err != nil {
		t.Fatal(err)
	}
	if repos := pa.Repositories(); len(repos) != 0 {
		t.Fatalf("auths kept after the revert: %v", repos)
	}
}
