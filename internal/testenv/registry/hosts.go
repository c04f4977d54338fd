package registry

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// Endpoint is one registry endpoint in a containerd hosts.toml: the
// upstream server or a mirror.
type Endpoint struct {
	URL          string   // "<scheme>://<host>[:port]"; http:// means plain HTTP
	CAFile       string   // PEM CA bundle to trust, optional
	SkipVerify   bool     // skip TLS verification
	Capabilities []string // default ["pull", "resolve"]
	// ClientCert and ClientKey configure a TLS client certificate, optional.
	ClientCert, ClientKey string
}

// Endpoint describes this registry for a hosts.toml.
func (r *Registry) Endpoint() Endpoint {
	return Endpoint{URL: r.URL(), CAFile: r.CAFile}
}

// WriteHostsConfig writes <hostsDir>/<name>/hosts.toml (containerd's
// hosts directory layout, name is the registry host as it appears in image
// references, e.g. "127.0.0.1:5000") with server as the upstream and the
// mirrors tried first, in order. It returns the file path.
func WriteHostsConfig(hostsDir, name string, server Endpoint, mirrors ...Endpoint) (string, error) {
	var b strings.Builder
	fmt.Fprintf(&b, "server = %q\n", server.URL)
	writeEndpointFields(&b, server, "")
	for _, m := range mirrors {
		fmt.Fprintf(&b, "\n[host.%q]\n", m.URL)
		caps := m.Capabilities
		if len(caps) == 0 {
			caps = []string{"pull", "resolve"}
		}
		quoted := make([]string, len(caps))
		for i, c := range caps {
			quoted[i] = fmt.Sprintf("%q", c)
		}
		fmt.Fprintf(&b, "  capabilities = [%s]\n", strings.Join(quoted, ", "))
		writeEndpointFields(&b, m, "  ")
	}
	dir := filepath.Join(hostsDir, name)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	p := filepath.Join(dir, "hosts.toml")
	if err := os.WriteFile(p, []byte(b.String()), 0o644); err != nil {
		return "", err
	}
	return p, nil
}

func writeEndpointFields(b *strings.Builder, e Endpoint, indent string) {
	if e.CAFile != "" {
		fmt.Fprintf(b, "%sca = %q\n", indent, e.CAFile)
	}
	if e.SkipVerify {
		fmt.Fprintf(b, "%sskip_verify = true\n", indent)
	}
	if e.ClientCert != "" {
		fmt.Fprintf(b, "%sclient = [[%q, %q]]\n", indent, e.ClientCert, e.ClientKey)
	}
}
