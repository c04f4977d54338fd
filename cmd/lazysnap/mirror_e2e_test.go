package main

import (
	"fmt"
	"maps"
	"strings"
	"testing"
	"time"

	"github.com/lazysnap/lazysnap/internal/testenv/registry"
)

// TestMirrorSharedByNodes: two nodes (lazysnap roots, each with its
// containerd) behind one pull-through cache (distribution in proxy mode,
// configured as a mirror in hosts.toml, as Dragonfly or Spegel would be)
// cold-start the same lazy image. The upstream registry serves the blobs
// for node A only: node A's reads fill the mirror, node B's are served by
// the mirror alone, and neither node goes to the upstream directly. (On a
// miss distribution's proxy fetches a blob from the upstream twice, once to
// answer and once to store it, and once more per request that comes while
// it stores: the upstream serves each blob 2-3 times for node A, logged.)
// With the mirror down, a third image still starts: its reads fall back to
// the upstream.
func TestMirrorSharedByNodes(t *testing.T) {
	up := registry.Start(t, registry.Options{})
	upstream := registry.StartWANProxy(t, up.URL(), registry.WANOptions{}) // counts what the upstream serves the mirror
	mirror := registry.Start(t, registry.Options{Proxy: &registry.ProxyOptions{RemoteURL: upstream.URL}})
	_, esgzDir := buildImages(t, "mirror")
	ref, _ := pushLayoutTo(t, up, esgzDir, "mirror", "esgz")

	const cfg = "[fetch]\n  no_background = true\n"
	opts := stackOptions{reg: up, mirrors: []registry.Endpoint{mirror.Endpoint()}}
	script := "cat /data/small; sha256sum /data/other | head -c 64"
	var want string
	var afterA map[string]int // upstream blob GETs after node A
	for i, name := range []string{"node A", "node B"} {
		s := startStackWith(t, cfg, opts)
		if out := s.pull(t, ref); !strings.Contains(out, "2 of 2 layers lazy") {
			t.Fatalf("%s: pull: %s", name, out)
		}
		got := s.ctr(t, "run", "--rm", "--snapshotter", "lazysnap", ref, fmt.Sprint("mirror-", i), "/bin/sh", "-c", script)
		if i == 0 {
			want = got
		} else if got != want {
			t.Fatalf("%s read %q, node A %q", name, got, want)
		}
		if direct := blobGETs(s.wan.Log()); len(direct) > 0 {
			t.Errorf("%s went to the upstream directly for %v", name, direct)
		}
		// the mirror stores what it proxied in the background: let it
		// finish before the next node asks
		for d := range blobGETs(upstream.Log()) {
			for deadline := time.Now().Add(30 * time.Second); !fileExists(mirror.BlobPath(d)); time.Sleep(50 * time.Millisecond) {
				if time.Now().After(deadline) {
					t.Fatalf("the mirror did not store %s; its log:\n%s", d, mirror.Log())
				}
			}
		}
		served := blobGETs(upstream.Log())
		t.Logf("%s: upstream blob GETs so far %v", name, served)
		if i == 0 {
			if len(served) == 0 {
				t.Fatal("the upstream served no blob: the test image went elsewhere")
			}
			afterA = served
		} else if !maps.Equal(served, afterA) {
			t.Errorf("node B made the upstream serve blobs: %v after node A, %v after node B", afterA, served)
		}
	}
	// the mirror down: a new image still starts, from the upstream
	mirror.Stop()
	_, downDir := buildImages(t, "mirror down")
	downRef, _ := pushLayoutTo(t, up, downDir, "mirror", "down")
	s := startStackWith(t, cfg, opts)
	start := time.Now()
	s.pull(t, downRef)
	if got := s.ctr(t, "run", "--rm", "--snapshotter", "lazysnap", downRef, "mirror-down", "/bin/sh", "-c", "cat /data/small"); got != "hello from a lazy layer\n" {
		t.Fatalf("with the mirror down the container printed %q", got)
	}
	t.Logf("mirror down: pull and run in %v", time.Since(start).Round(time.Millisecond))
	if len(blobGETs(s.wan.Log())) == 0 {
		t.Error("with the mirror down no blob came from the upstream")
	}
}

// blobGETs counts the blob GET requests of a proxy's log by digest.
func blobGETs(log []registry.WANRequest) map[string]int {
	out := map[string]int{}
	for _, r := range log {
		if i := strings.Index(r.Path, "/blobs/"); r.Method == "GET" && i >= 0 {
			out[r.Path[i+len("/blobs/"):]]++
		}
	}
	return out
}
