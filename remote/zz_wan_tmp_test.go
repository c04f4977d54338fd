package remote

import (
	"context"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/lazysnap/lazysnap/fetcher"
	"github.com/lazysnap/lazysnap/internal/testenv/registry"
)

func TestTmpPullWAN(t *testing.T) {
	if os.Getenv("TMP_WAN") == "" {
		t.Skip()
	}
	blob, err := os.ReadFile("/var/tmp/lazysnap-fallback/bookworm.tar.gz")
	if err != nil {
		t.Fatal(err)
	}
	r := registry.Start(t, registry.Options{})
	wan := registry.StartWANProxy(t, r.URL(), registry.WANOptions{RTT: 20 * time.Millisecond, BandwidthBytesPerSec: 12_500_000})
	hosts := t.TempDir()
	if _, err := registry.WriteHostsConfig(hosts, r.Host, registry.Endpoint{URL: wan.URL}); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	img, err := r.PushImage(ctx, "wan/plain", "v1", blob)
	if err != nil {
		t.Fatal(err)
	}
	conns, _ := strconv.Atoi(os.Getenv("TMP_WAN"))
	f, _ := fetcher.New(fetcher.Config{HostsDir: hosts})
	fs := New(NewRegistrySource(f), Options{Root: t.TempDir(), Pull: PullOptions{Connections: conns}})
	start := time.Now()
	res, err := fs.Pull(ctx, t.TempDir(), nil, sociLabels(img.Ref, img.Layers[0].Digest))
	if err != nil {
		t.Fatal(err)
	}
	d := time.Since(start)
	t.Logf("conns %d: %d bytes in %v: %.2f × link time (%.2f s)", conns, res.Bytes, d, d.Seconds()/(float64(res.Bytes)/12.5e6), float64(res.Bytes)/12.5e6)
}
