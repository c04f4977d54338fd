package main

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/lazysnap/lazysnap/convert"
	"github.com/lazysnap/lazysnap/internal/testenv"
)

// TestZstdChunkedEndToEnd: zstd:chunked images, converted by lazysnap,
// by skopeo (Debian's 1.9) and by ctr-remote (Debian's), pulled through containerd with lazysnap:
// every layer mounts lazily, a container reads the right bytes (the big
// file's sha256 included), and the first run fetches well under half the
// image.
func TestZstdChunkedEndToEnd(t *testing.T) {
	s := startStack(t, "[fetch]\n  no_background = true\n")
	gzipDir, _ := buildImages(t, "zstd")
	zcDir := filepath.Join(t.TempDir(), "zc")
	if _, err := convert.Image(context.Background(), gzipDir, zcDir, convert.Options{Format: convert.FormatZstdChunked}); err != nil {
		t.Fatal(err)
	}
	ours, size := s.pushLayout(t, zcDir, "busybox", "zstd-chunked")
	skopeo := testenv.LookPath(t, "skopeo", "skopeo")
	bySkopeo := s.reg.Ref("skopeo/busybox", "zstd-chunked")
	cmd := exec.Command(skopeo, "--insecure-policy", "copy", "--dest-tls-verify=false", "--dest-compress",
		"--dest-compress-format", "zstd:chunked", "oci:"+gzipDir+":1", "docker://"+bySkopeo)
	cmd.Env = append(os.Environ(), "HOME="+t.TempDir())
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("skopeo copy: %v\n%s", err, out)
	}
	// ctr-remote (the eStargz library) annotates its zstd:chunked layers
	// with an eStargz TOC digest too, which containerd passes as a label:
	// Mount then has only that digest, of the TOC JSON
	byCtrRemote := s.reg.Ref("ctrremote/busybox", "zstd-chunked")
	s.ctrRemoteConvert(t, busyboxLayers(t, "zstd"), "lazysnap.test/busybox:zc", byCtrRemote, "--zstdchunked")
	want := sha256Of(t, busyboxLayers(t, "zstd")[1], "data/big")
	for i, ref := range []string{ours, bySkopeo, byCtrRemote} {
		t.Run([]string{"lazysnap convert", "skopeo", "ctr-remote"}[i], func(t *testing.T) {
			s.wan.Reset()
			if out := s.pull(t, ref); !strings.Contains(out, "2 of 2 layers lazy") {
				t.Fatalf("pull: %s\nlazysnap log:\n%s", out, s.log())
			}
			name := "zc" + string(rune('a'+i))
			got := s.ctr(t, "run", "--rm", "--snapshotter", "lazysnap", ref, name+"1", "/bin/sh", "-c", "cat /data/small")
			if got != "hello from a lazy layer\n" {
				t.Fatalf("container printed %q", got)
			}
			st := s.wan.Stats()
			t.Logf("%s: lazy pull + run: %d requests, %d of %d image bytes fetched", ref, st.Requests, st.ResponseBytes, size)
			if st.ResponseBytes*2 >= size {
				t.Errorf("fetched %d bytes of a %d-byte image, want well under half", st.ResponseBytes, size)
			}
			sum := s.ctr(t, "run", "--rm", "--snapshotter", "lazysnap", ref, name+"2", "/bin/sh", "-c", "sha256sum /data/big | head -c 64")
			if sum != want {
				t.Fatalf("sha256 of data/big in the container %q, want %q", sum, want)
			}
		})
	}
}
