package main

import (
	"bytes"
	"compress/gzip"
	"strings"
	"testing"

	"github.com/lazysnap/lazysnap/ops"
	"github.com/lazysnap/lazysnap/soci"
)

// TestSociForgedIndexE2E: through containerd, `lazysnap serve` and a
// registry, a SOCI index that forges a file's metadata never shows it to
// a container. (a) An image whose v2 index was rewritten with only
// /data/small's mode changed (to 4755): the container's open of it fails
// with EIO, and then so does its stat (never mode 4755); status names the
// mismatch as the layer's error and lists the index as a bad layer. (b) A
// forged v1 index pushed as a referrer onto an image without one: with
// the default config it is ignored (the layers are pulled the ordinary
// way, the reason in status, the file as the layer has it); with [soci]
// allow_v1_indexes it is used, and its forgery fails as in (a). (c) A forged v1 referrer pushed onto a v2-indexed
// image, v1 allowed: the v2 index is used, and the file reads right.
func TestSociForgedIndexE2E(t *testing.T) {
	// each case's layers are its own (a variant file in each): containerd
	// shares snapshots between images by their layers' diff IDs, so a
	// layer mounted for one case would serve the next
	gzLayers := func(variant string) [][]byte {
		var layers [][]byte
		for _, l := range busyboxLayers(t, variant) {
			var b bytes.Buffer
			zw := gzip.NewWriter(&b)
			zw.Write(l)
			zw.Close()
			layers = append(layers, b.Bytes())
		}
		return layers
	}
	const span = 1 << 20
	forge := func(layer int, z *soci.Ztoc) {
		for i := range z.Files {
			if z.Files[i].Name == "data/small" {
				z.Files[i].Mode = 0o4755
			}
		}
	}
	const reason = `"data/small": mode 644 in the layer, the zTOC says 4755`
	// refused runs cat /data/small in ref, lazily, and checks it fails
	// with EIO and the reason in status
	refused := func(t *testing.T, s *stack, ref, id, dataLayer string) {
		t.Helper()
		if out := s.pull(t, ref); !strings.Contains(out, "2 of 2 layers lazy") {
			t.Fatalf("pull %s: %s\nlazysnap log:\n%s", ref, out, s.log())
		}
		// its open fails; after that its attributes are refused too (ls
		// would show -rwsr-xr-x from the forged zTOC otherwise)
		out, err := s.ctrd.Ctr(t, "run", "--rm", "--snapshotter", "lazysnap", ref, id, "/bin/sh", "-c", "cat /data/small; ls -l /data/small")
		if err == nil || strings.Count(string(out), "I/O error")+strings.Count(string(out), "Input/output error") != 2 || strings.Contains(string(out), "rws") {
			t.Fatalf("reading the forged file, then listing it: %v\n%s", err, out)
		}
		rep := s.status(t)
		if l := imageLayers(rep, ref)[dataLayer]; !strings.Contains(l.Error, reason) {
			t.Fatalf("status of the data layer: error %q, want %q", l.Error, reason)
		}
		if !hasBadIndex(rep, dataLayer, reason) {
			t.Fatalf("bad layers %+v, want the data layer's index with %q", rep.BadLayers, reason)
		}
	}
	// reads runs cat /data/small in ref and checks it prints the layer's
	// file
	reads := func(t *testing.T, s *stack, ref, id string) {
		t.Helper()
		if got := s.ctr(t, "run", "--rm", "--snapshotter", "lazysnap", ref, id, "/bin/sh", "-c", "cat /data/small"); got != "hello from a lazy layer\n" {
			t.Fatalf("container printed %q", got)
		}
	}

	s := startStack(t, "[fetch]\n  no_background = true\n")
	t.Run("v2 index rewritten", func(t *testing.T) {
		img, err := s.reg.Pusher().PushSociImage(t.Context(), s.reg.Host, "trust-v2", "1", span, forge, gzLayers("v2")...)
		if err != nil {
			t.Fatal(err)
		}
		refused(t, s, img.Ref, "trust-v2", img.Layers[1].Digest.String())
	})
	t.Run("v1 referrer, v1 off", func(t *testing.T) {
		img, err := s.reg.Pusher().PushSociImageV1Tampered(t.Context(), s.reg.Host, "trust-v1", "1", span, forge, gzLayers("v1 off")...)
		if err != nil {
			t.Fatal(err)
		}
		if out := s.pull(t, img.Ref); !strings.Contains(out, "0 of 2 layers lazy") {
			t.Fatalf("pull %s: %s, want no layer lazy", img.Ref, out)
		}
		for dg, l := range imageLayers(s.status(t), img.Ref) {
			// not lazy: pulled at line rate, why in NotLazy
			if !strings.Contains(l.Error+l.NotLazy, "v1 indexes are off") {
				t.Fatalf("layer %s in status: %+v, want the v1 index refused as its reason", dg, l)
			}
		}
		reads(t, s, img.Ref, "trust-v1")
	})

	v1 := startStack(t, "[soci]\n  allow_v1_indexes = true\n[fetch]\n  no_background = true\n")
	t.Run("v1 referrer, v1 allowed", func(t *testing.T) {
		img, err := v1.reg.Pusher().PushSociImageV1Tampered(t.Context(), v1.reg.Host, "trust-v1", "1", span, forge, gzLayers("v1 on")...)
		if err != nil {
			t.Fatal(err)
		}
		refused(t, v1, img.Ref, "trust-v1-on", img.Layers[1].Digest.String())
	})
	t.Run("v1 referrer onto a v2 image", func(t *testing.T) {
		layers := gzLayers("both")
		img, err := v1.reg.Pusher().PushSociImage(t.Context(), v1.reg.Host, "trust-both", "1", span, nil, layers...)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := v1.reg.Pusher().PushSociReferrerV1(t.Context(), "trust-both", img.Manifest, span, forge, layers...); err != nil {
			t.Fatal(err)
		}
		if out := v1.pull(t, img.Ref); !strings.Contains(out, "2 of 2 layers lazy") {
			t.Fatalf("pull %s: %s", img.Ref, out)
		}
		reads(t, v1, img.Ref, "trust-both")
		for dg, l := range imageLayers(v1.status(t), img.Ref) {
			if l.Format != "soci" || l.Error != "" {
				t.Fatalf("layer %s in status: %+v, want soci without error", dg, l)
			}
		}
	})
}

// hasBadIndex reports whether status lists an index of layer dg as bad
// for reason.
func hasBadIndex(rep ops.Report, dg, reason string) bool {
	for _, b := range rep.BadLayers {
		if b.Digest == dg && b.Index != "" && strings.Contains(b.Reason, reason) {
			return true
		}
	}
	return false
}
