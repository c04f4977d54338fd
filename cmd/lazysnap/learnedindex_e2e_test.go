package main

// End-to-end test of the learned index (issue 24): one node's line-rate
// pull publishes the zTOCs it kept as a v1 SOCI index to a repository the
// cluster trusts; another node trusting it mounts the image lazily, one
// trusting another repository pulls it at line rate.

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/lazysnap/lazysnap/internal/testenv/registry"
	"github.com/lazysnap/lazysnap/ops"
)

// TestLearnedIndex: node A ([soci] publish_repository) pulls an unindexed
// gzip image at line rate and publishes its index (status says where);
// node B, trusting that repository (allow_v1_indexes off), pulls the image
// with every layer lazy (format soci) and runs it; node C, trusting only
// another repository, pulls it at line rate.
func TestLearnedIndex(t *testing.T) {
	reg := registry.Start(t, registry.Options{})
	repo := reg.Host + "/cluster/soci-indexes"
	a := startStackWith(t, fmt.Sprintf("[soci]\n  publish_repository = %q\n", repo), stackOptions{reg: reg})
	b := startStackWith(t, fmt.Sprintf("[soci]\n  trusted_repositories = [%q]\n", repo), stackOptions{reg: reg})
	c := startStackWith(t, fmt.Sprintf("[soci]\n  trusted_repositories = [%q]\n", reg.Host+"/elsewhere"), stackOptions{reg: reg})

	ref, m := a.pushGzip(t, "learned index")
	if out, err := a.tryPull(t, ref); err != nil || !strings.Contains(out, "0 of 2 layers lazy, 2 pulled at line rate") {
		t.Fatalf("node A's pull: %v\n%s", err, out)
	}
	// the pushes run in the background after the pulls: wait for them
	var layers []ops.Layer
	for deadline := time.Now().Add(time.Minute); ; time.Sleep(100 * time.Millisecond) {
		layers = layers[:0]
		for _, l := range m.Layers {
			if sl, ok := layerOf(a.status(t), ref, l.Digest.String()); ok && sl.Published != "publishing" {
				layers = append(layers, sl)
			}
		}
		if len(layers) == len(m.Layers) || time.Now().After(deadline) {
			break
		}
	}
	for _, sl := range layers {
		if !strings.HasPrefix(sl.Published, "published in SOCI index sha256:") || !strings.HasSuffix(sl.Published, " to "+repo) {
			t.Fatalf("node A's layer %s: published %q, want published to %s\n%s", sl.Digest, sl.Published, repo, a.log())
		}
	}
	if len(layers) != len(m.Layers) {
		t.Fatalf("node A published %d of %d layers: %+v", len(layers), len(m.Layers), layers)
	}

	if out := b.pull(t, ref); !strings.Contains(out, "2 of 2 layers lazy") {
		t.Fatalf("node B's pull: %s\n%s", out, b.log())
	}
	if got := b.ctr(t, "run", "--rm", "--snapshotter", "lazysnap", ref, "li1", "/bin/cat", "/data/small"); got != "hello from a lazy layer\n" {
		t.Fatalf("node B's container printed %q", got)
	}
	rep := b.status(t)
	for _, l := range m.Layers {
		if sl, ok := layerOf(rep, ref, l.Digest.String()); !ok || sl.Path != ops.PathLazy || sl.Format != "soci" {
			t.Errorf("node B's layer %s: %+v, want lazy through the published index (format soci)", l.Digest, sl)
		}
	}

	if out, err := c.tryPull(t, ref); err != nil || !strings.Contains(out, "0 of 2 layers lazy, 2 pulled at line rate") {
		t.Fatalf("node C's pull: %v\n%s", err, out)
	}
	rep = c.status(t)
	for _, l := range m.Layers {
		if sl, ok := layerOf(rep, ref, l.Digest.String()); !ok || sl.Path != ops.PathLineRate || !strings.Contains(sl.NotLazy, "no SOCI index") {
			t.Errorf("node C's layer %s: %+v, want pulled at line rate, the image having no SOCI index it trusts", l.Digest, sl)
		}
	}
}
