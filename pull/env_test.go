package pull

import "testing"

// TestEnv: CONTAINERD_ADDRESS and CONTAINERD_NAMESPACE, when set, are
// the socket and namespace; unset or empty, ctr's defaults.
func TestEnv(t *testing.T) {
	cases := []struct {
		name           string
		env            map[string]string
		wantAddr, want string
	}{
		{"unset", nil, DefaultAddress, DefaultNamespace},
		{"both", map[string]string{"CONTAINERD_ADDRESS": "/x/c.sock", "CONTAINERD_NAMESPACE": "k8s.io"}, "/x/c.sock", "k8s.io"},
		{"namespace only", map[string]string{"CONTAINERD_NAMESPACE": "moby"}, DefaultAddress, "moby"},
		{"empty", map[string]string{"CONTAINERD_ADDRESS": ""}, DefaultAddress, DefaultNamespace},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			addr, ns := Env(func(k string) string { return c.env[k] })
			if addr != c.wantAddr || ns != c.want {
				t.Fatalf("Env: %q %q, want %q %q", addr, ns, c.wantAddr, c.want)
			}
		})
	}
}
