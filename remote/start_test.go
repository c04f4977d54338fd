package remote

import (
	"archive/tar"
	"bytes"
	"context"
	"encoding/json"
	"io"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/lazysnap/lazysnap/estargz"
	"github.com/lazysnap/lazysnap/fetcher"
	"github.com/lazysnap/lazysnap/fs/fetch"
	"github.com/lazysnap/lazysnap/internal/testenv"
	"github.com/opencontainers/go-digest"
	specs "github.com/opencontainers/image-spec/specs-go"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// TestStartPaths: where the program a container runs first may be, from
// the image configuration: the entrypoint before the command, a path as
// given (from the working directory), a bare name in each PATH directory.
func TestStartPaths(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  ocispec.ImageConfig
		want []string
	}{
		{name: "none", cfg: ocispec.ImageConfig{}},
		{name: "command, absolute", cfg: ocispec.ImageConfig{Cmd: []string{"/bin/sh"}}, want: []string{"/bin/sh"}},
		{name: "entrypoint first", cfg: ocispec.ImageConfig{Entrypoint: []string{"/usr/bin/python3", "-u"}, Cmd: []string{"app.py"}}, want: []string{"/usr/bin/python3"}},
		{name: "bare name, default PATH", cfg: ocispec.ImageConfig{Cmd: []string{"python3"}},
			want: []string{"/usr/local/sbin/python3", "/usr/local/bin/python3", "/usr/sbin/python3", "/usr/bin/python3", "/sbin/python3", "/bin/python3"}},
		{name: "bare name, the image's PATH", cfg: ocispec.ImageConfig{Env: []string{"LANG=C.UTF-8", "PATH=/opt/app/bin:relative:/usr/bin"}, Cmd: []string{"app"}},
			want: []string{"/opt/app/bin/app", "/usr/bin/app"}},
		{name: "relative path, working directory", cfg: ocispec.ImageConfig{WorkingDir: "/srv", Cmd: []string{"./run"}}, want: []string{"/srv/run"}},
		{name: "empty name", cfg: ocispec.ImageConfig{Cmd: []string{""}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := startPaths(tc.cfg); !slices.Equal(got, tc.want) {
				t.Errorf("startPaths = %q, want %q", got, tc.want)
			}
		})
	}
}

// TestMountPredictsStart: a Mount reads the image's configuration and
// fetches the program it names (an executable of several chunks, whole)
// and the user database before anything reads the layer; nothing else of
// the layer is fetched; an image whose command the layer lacks, or with
// none, fetches the user database alone;
// prediction off reads no configuration.
func TestMountPredictsStart(t *testing.T) {
	testenv.NeedFUSE(t)
	reg, hosts := startRegistry(t)
	ctx := context.Background()
	prog := bytes.Repeat([]byte("a program of several chunks\n"), 3000) // 84 KB: 3 chunks of 32 KiB
	var tb bytes.Buffer
	tw := tar.NewWriter(&tb)
	for _, d := range []string{"etc/", "usr/", "usr/bin/"} {
		tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: d, Mode: 0o755})
	}
	for _, f := range []struct {
		name string
		data []byte
	}{{"etc/group", []byte("root:x:0:\n")}, {"etc/passwd", []byte("root:x:0:0:root:/root:/bin/sh\n")}, {"etc/shadow", []byte("root:*::0:::::\n")},
		{"usr/bin/app", prog}, {"usr/bin/other", bytes.Repeat([]byte("another\n"), 5000)}} {
		tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: f.name, Mode: 0o755, Size: int64(len(f.data))})
		tw.Write(f.data)
	}
	tw.WriteHeader(&tar.Header{Typeflag: tar.TypeSymlink, Name: "bin", Linkname: "usr/bin", Mode: 0o777})
	tw.Close()
	tarb := tb.Bytes()
	var blob bytes.Buffer
	res, err := estargz.Convert(ctx, &blob, io.NewSectionReader(bytes.NewReader(tarb), 0, int64(len(tarb))), estargz.WithChunkSize(32<<10))
	if err != nil {
		t.Fatal(err)
	}
	p := reg.Pusher()
	layer, err := p.PushBlob(ctx, "start/app", blob.Bytes())
	if err != nil {
		t.Fatal(err)
	}
	layer.MediaType = ocispec.MediaTypeImageLayerGzip
	layer.Annotations = res.Annotations
	for _, tc := range []struct {
		name        string
		cfg         ocispec.ImageConfig
		noPredict   bool
		wantPresent int // chunks present once the Mount's prediction is done, before any read
	}{
		// the program's 3 chunks, /etc/passwd and /etc/group (not /etc/shadow)
		{name: "command on the PATH", cfg: ocispec.ImageConfig{Env: []string{"PATH=/usr/local/bin:/bin"}, Cmd: []string{"app"}}, wantPresent: 3 + 2},
		{name: "entrypoint", cfg: ocispec.ImageConfig{Entrypoint: []string{"/usr/bin/app"}, Cmd: []string{"/usr/bin/other"}}, wantPresent: 3 + 2},
		{name: "not in the layer", cfg: ocispec.ImageConfig{Cmd: []string{"/bin/sh"}}, wantPresent: 2},
		{name: "no command", cfg: ocispec.ImageConfig{}, wantPresent: 2},
		{name: "prediction off", cfg: ocispec.ImageConfig{Cmd: []string{"/usr/bin/app"}}, noPredict: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tag := strings.ReplaceAll(tc.name, " ", "-")
			cb, _ := json.Marshal(ocispec.Image{Platform: ocispec.Platform{OS: "linux", Architecture: "amd64"}, Config: tc.cfg,
				RootFS: ocispec.RootFS{Type: "layers", DiffIDs: []digest.Digest{res.DiffID}}})
			cfg, err := p.PushBlob(ctx, "start/app", cb)
			if err != nil {
				t.Fatal(err)
			}
			cfg.MediaType = ocispec.MediaTypeImageConfig
			m, _ := json.Marshal(ocispec.Manifest{Versioned: specs.Versioned{SchemaVersion: 2}, MediaType: ocispec.MediaTypeImageManifest, Config: cfg, Layers: []ocispec.Descriptor{layer}})
			if _, err := p.PushManifest(ctx, "start/app", tag, ocispec.MediaTypeImageManifest, m); err != nil {
				t.Fatal(err)
			}
			f, err := fetcher.New(fetcher.Config{HostsDir: hosts, CacheDir: t.TempDir()})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { f.Close() })
			rfs := New(NewRegistrySource(f), Options{Root: t.TempDir(),
				Layer: fetch.Options{NoPrefetch: true, NoBackground: true, ReadAround: -1, NoPredict: tc.noPredict}})
			t.Cleanup(func() { rfs.Close() })
			mp := t.TempDir()
			if err := rfs.Mount(ctx, mp, layerLabels(reg.Ref("start/app", tag), []ocispec.Descriptor{layer}, 0)); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { rfs.Unmount(ctx, mp) })
			ml := rfs.mounted[mp]
			// the lookup, then the program's fetch
			deadline := time.Now().Add(10 * time.Second)
			for {
				st := ml.layer.Stats()
				if st.ChunksPresent >= tc.wantPresent && st.InFlight == 0 && st.Predicting == 0 && lookedUp(rfs) {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("after 10 s: %d chunks present, want %d", st.ChunksPresent, tc.wantPresent)
				}
				time.Sleep(10 * time.Millisecond)
			}
			if n := len(rfs.starts); tc.noPredict && n != 0 {
				t.Errorf("prediction off: %d image configurations looked up, want none", n)
			}
			if st := ml.layer.Stats(); st.ChunksPresent != tc.wantPresent || st.FuseReads != 0 {
				t.Errorf("%d chunks present, %d reads; want %d present before any read", st.ChunksPresent, st.FuseReads, tc.wantPresent)
			}
		})
	}
}

// lookedUp reports whether every image start rfs looks up has been found
// (or not).
func lookedUp(rfs *FS) bool {
	rfs.mu.Lock()
	defer rfs.mu.Unlock()
	for _, s := range rfs.starts {
		select {
		case <-s.done:
		default:
			return false
		}
	}
	return true
}
