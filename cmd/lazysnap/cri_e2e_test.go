package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	ctrdenv "github.com/lazysnap/lazysnap/internal/testenv/containerd"
	"github.com/lazysnap/lazysnap/internal/testenv/registry"
	"github.com/lazysnap/lazysnap/internal/testimage"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// criNode is a stack whose containerd serves CRI, with lazysnap's image
// service in front of it: a Kubernetes node as kubelet sees it.
type criNode struct {
	*stack
	rt      runtimeapi.RuntimeServiceClient // containerd's
	images  runtimeapi.ImageServiceClient   // lazysnap's
	imgSock string
}

// pushPause pushes a pause image to reg: busybox sleeping, which is all a
// sandbox container needs to do.
func pushPause(t *testing.T, reg *registry.Registry) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "pause")
	if _, err := testimage.Layout(dir, "lazysnap.test/pause:1", busyboxLayers(t)[0]); err != nil {
		t.Fatal(err)
	}
	dir = rewriteLayout(t, dir, func(_ string, _ *ocispec.Manifest, cfg *ocispec.Image) {
		cfg.Config.Cmd = []string{"/bin/sleep", "100000"}
	})
	ref, _ := pushLayoutTo(t, reg, dir, "pause", "1")
	return ref
}

// startCRINode starts a registry with the pause image, containerd with
// CRI (snapshotter lazysnap, sandboxes on the host network: no CNI) and
// lazysnap serving its image service on a socket of its own.
func startCRINode(t *testing.T, extraConfig string) *criNode {
	t.Helper()
	reg := registry.Start(t, registry.Options{})
	pause := pushPause(t, reg)
	s := startStackWith(t, extraConfig, stackOptions{reg: reg, cri: func(s *stack) string {
		return criConfig(s, pause)
	}})
	n := &criNode{stack: s, imgSock: filepath.Join(s.dir, "cri.sock")}
	// serve again, now that containerd's address is known
	s.stopLazysnap(t)
	cfgPath := filepath.Join(s.dir, "lazysnap.toml")
	f, err := os.OpenFile(cfgPath, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprintf(f, "[cri]\n  listen_address = %q\n  containerd_cri_address = %q\n", n.imgSock, s.ctrd.Address())
	f.Close()
	s.startLazysnap(t)
	n.rt = runtimeapi.NewRuntimeServiceClient(dialCRI(t, s.ctrd.Address()))
	n.images = runtimeapi.NewImageServiceClient(dialCRI(t, n.imgSock))
	return n
}

// criConfig is containerd's CRI configuration for the stack: snapshotter
// lazysnap with the labels it needs, pause from the stack's registry, the
// stack's hosts directory, no CNI configured (sandboxes use the host
// network). containerd 2.x splits the CRI plugin in three.
func criConfig(s *stack, pause string) string {
	cni := filepath.Join(s.dir, "cni")
	// a sandbox's oom_score_adj of -998 needs CAP_SYS_RESOURCE, which a
	// test machine may not give even to root: no lower than containerd's
	if os.Getenv(ctrdenv.BinDirEnv) == "" {
		return fmt.Sprintf(`
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = %q
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "lazysnap"
    disable_snapshot_annotations = false
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = %q
    conf_dir = %q
  [plugins."io.containerd.grpc.v1.cri".registry]
    config_path = %q
`, pause, cni, cni, s.hosts)
	}
	return fmt.Sprintf(`
[plugins."io.containerd.cri.v1.images"]
  snapshotter = "lazysnap"
  disable_snapshot_annotations = false
  [plugins."io.containerd.cri.v1.images".pinned_images]
    sandbox = %q
  [plugins."io.containerd.cri.v1.images".registry]
    config_path = %q
[plugins."io.containerd.cri.v1.runtime"]
  restrict_oom_score_adj = true
  [plugins."io.containerd.cri.v1.runtime".containerd]
    default_runtime_name = "runc"
    [plugins."io.containerd.cri.v1.runtime".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      snapshotter = "lazysnap"
  [plugins."io.containerd.cri.v1.runtime".cni]
    bin_dir = %q
    conf_dir = %q
[plugins."io.containerd.grpc.v1.cri"]
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
`, pause, s.hosts, cni, cni)
}

func dialCRI(t *testing.T, sock string) *grpc.ClientConn {
	t.Helper()
	conn, err := grpc.NewClient("unix://"+sock, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

func criCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

// pull is kubelet's PullImage, through lazysnap's image service.
func (n *criNode) pull(t *testing.T, ref, user, pass string) error {
	t.Helper()
	_, err := n.images.PullImage(criCtx(t), &runtimeapi.PullImageRequest{
		Image: &runtimeapi.ImageSpec{Image: ref},
		Auth:  &runtimeapi.AuthConfig{Username: user, Password: pass},
	})
	return err
}

// runPod runs a sandbox on the host network and in it a container of ref
// running cmd; it returns the container's id and log path.
func (n *criNode) runPod(t *testing.T, name, ref string, cmd ...string) (string, string) {
	t.Helper()
	ctx := criCtx(t)
	logDir := t.TempDir()
	sb := &runtimeapi.PodSandboxConfig{
		Metadata:     &runtimeapi.PodSandboxMetadata{Name: name, Uid: name + "-uid", Namespace: "default"},
		LogDirectory: logDir,
		Linux: &runtimeapi.LinuxPodSandboxConfig{SecurityContext: &runtimeapi.LinuxSandboxSecurityContext{
			NamespaceOptions: &runtimeapi.NamespaceOption{Network: runtimeapi.NamespaceMode_NODE},
		}},
	}
	pod, err := n.rt.RunPodSandbox(ctx, &runtimeapi.RunPodSandboxRequest{Config: sb})
	if err != nil {
		t.Fatalf("RunPodSandbox: %v\ncontainerd log:\n%s\nlazysnap log:\n%s", err, tail(n.ctrd.LogPath()), n.log())
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		n.rt.StopPodSandbox(ctx, &runtimeapi.StopPodSandboxRequest{PodSandboxId: pod.PodSandboxId})
		n.rt.RemovePodSandbox(ctx, &runtimeapi.RemovePodSandboxRequest{PodSandboxId: pod.PodSandboxId})
	})
	c, err := n.rt.CreateContainer(ctx, &runtimeapi.CreateContainerRequest{
		PodSandboxId: pod.PodSandboxId,
		Config: &runtimeapi.ContainerConfig{
			Metadata: &runtimeapi.ContainerMetadata{Name: name},
			Image:    &runtimeapi.ImageSpec{Image: ref},
			Command:  cmd,
			LogPath:  name + ".log",
		},
		SandboxConfig: sb,
	})
	if err != nil {
		t.Fatalf("CreateContainer: %v\nlazysnap log:\n%s", err, n.log())
	}
	if _, err := n.rt.StartContainer(ctx, &runtimeapi.StartContainerRequest{ContainerId: c.ContainerId}); err != nil {
		t.Fatalf("StartContainer: %v\nlazysnap log:\n%s", err, n.log())
	}
	return c.ContainerId, filepath.Join(logDir, name+".log")
}

// waitLog waits (bounded) until the CRI log at path has a line saying want.
func waitLog(t *testing.T, path, want string) string {
	t.Helper()
	var b []byte
	for range 300 {
		b, _ = os.ReadFile(path)
		if strings.Contains(string(b), want) {
			return string(b)
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("container log %s has no %q:\n%s", path, want, b)
	return ""
}

// readSumCRI is readSum through the CRI's ExecSync.
func (n *criNode) readSumCRI(t *testing.T, id, path, want string) string {
	t.Helper()
	r, err := n.rt.ExecSync(criCtx(t), &runtimeapi.ExecSyncRequest{
		ContainerId: id, Cmd: []string{"/bin/sh", "-c", "sha256sum " + path + " | head -c 64"}, Timeout: 60,
	})
	if err != nil {
		return fmt.Sprintf("ExecSync: %v", err)
	}
	got := string(r.Stdout) + string(r.Stderr)
	switch {
	case string(r.Stdout) == want:
		return "ok"
	case sha256Hex.MatchString(got):
		t.Fatalf("WRONG BYTES: sha256 of %s in the container is %s, want %s", path, got, want)
	case strings.Contains(got, "Input/output error"):
		return "EIO"
	}
	return fmt.Sprintf("other (exit %d): %q", r.ExitCode, got)
}

func tail(path string) string {
	b, _ := os.ReadFile(path)
	if len(b) > 8<<10 {
		b = b[len(b)-8<<10:]
	}
	return string(b)
}

// TestCRIPullAuthE2E is a Kubernetes node: kubelet's calls (the CRI Go
// client) pull an eStargz image from a registry that wants a password,
// through lazysnap's image service, and run it in a pod; the layers are
// mounted lazily and fetched with the pull's credentials. When the
// password changes, reads fail until the next pull brings the new one,
// and a pull with a wrong secret fails clearly and leaves the good
// credentials in place. No secret reaches lazysnap's logs.
func TestCRIPullAuthE2E(t *testing.T) {
	criPullAuth(t, "")
}

// TestCRIPullAuthInProcessE2E is TestCRIPullAuthE2E with the layers served
// by serve itself (no fuse manager): the auths stay in serve's memory.
func TestCRIPullAuthInProcessE2E(t *testing.T) {
	criPullAuth(t, "[fuse_manager]\n  enable = false\n")
}

// TestCRIPullAuthContainerd2E2E is TestCRIPullAuthE2E on containerd 2.x
// (LAZYSNAP_CONTAINERD2_DIR, scripts/containerd2.sh), whose CRI is three
// plugins configured apart.
func TestCRIPullAuthContainerd2E2E(t *testing.T) {
	t.Setenv(ctrdenv.BinDirEnv, ctrdenv.Containerd2Dir(t))
	criPullAuth(t, "")
}

func criPullAuth(t *testing.T, extraConfig string) {
	n := startCRINode(t, "[fetch]\n  no_background = true\n  timeout = \"20s\"\n"+extraConfig)
	reg := registry.Start(t, registry.Options{TLS: true, Username: "alice", Password: "first-password"})
	if _, err := registry.WriteHostsConfig(n.hosts, reg.Host, reg.Endpoint(), reg.Endpoint()); err != nil {
		t.Fatal(err)
	}
	authNode := *n.stack
	authNode.reg = reg
	_, dir := buildImages(t, "cri v1")
	ref, _ := authNode.pushLayout(t, dir, "private/busybox", "v1")
	_, dir2 := buildImages(t, "cri v2")
	ref2, _ := authNode.pushLayout(t, dir2, "private/busybox", "v2")
	sums := dataSums(t)

	if err := n.pull(t, ref, "", ""); err == nil {
		t.Fatal("an anonymous pull of the private image succeeded")
	}
	if err := n.pull(t, ref, "alice", "first-password"); err != nil {
		t.Fatalf("PullImage: %v\nlazysnap log:\n%s", err, n.log())
	}
	id, logPath := n.runPod(t, "lazy", ref, "/bin/sh", "-c", "cat /data/small; exec sleep 600")
	waitLog(t, logPath, "hello from a lazy layer")
	lazy := 0
	for _, img := range n.status(t).Images {
		for _, l := range img.Layers {
			if img.Ref == ref && l.State == "lazy" {
				lazy++
			}
		}
	}
	if lazy != 2 {
		t.Fatalf("%d layers of %s mounted lazily, want 2: %+v", lazy, ref, n.status(t).Images)
	}
	repo := strings.TrimSuffix(ref, ":v1")
	if got := n.status(t).PullAuths; len(got) != 1 || got[0] != repo {
		t.Fatalf("status: pull auths held for %q, want %q", got, repo)
	}

	if err := reg.SetCredentials("alice", "second-password"); err != nil {
		t.Fatal(err)
	}
	reg.Restart()
	t.Run("rotated password, before the next pull", func(t *testing.T) {
		if got := n.readSumCRI(t, id, "/data/other", sums.other); got != "EIO" {
			t.Fatalf("read with the old password: %s, want EIO", got)
		}
	})
	t.Run("rotated password, after the next pull", func(t *testing.T) {
		if err := n.pull(t, ref, "alice", "second-password"); err != nil {
			t.Fatalf("PullImage with the new password: %v", err)
		}
		if got := n.readSumCRI(t, id, "/data/other", sums.other); got != "ok" {
			t.Fatalf("read after the pull with the new password: %s\nlazysnap log:\n%s", got, n.log())
		}
	})
	t.Run("wrong secret", func(t *testing.T) {
		err := n.pull(t, ref2, "alice", "wrong-password")
		if err == nil || !strings.Contains(strings.ToLower(err.Error()), "unauthorized") && !strings.Contains(err.Error(), "401") {
			t.Fatalf("PullImage with a wrong secret: %v, want an unauthorized error", err)
		}
		t.Logf("PullImage with a wrong secret: %v", err)
		st, err := n.images.ImageStatus(criCtx(t), &runtimeapi.ImageStatusRequest{Image: &runtimeapi.ImageSpec{Image: ref2}})
		if err != nil || st.Image != nil {
			t.Fatalf("image of the failed pull: %v %v", st, err)
		}
		// the repository's good credentials were not replaced by it
		if got := n.readSumCRI(t, id, "/data/big", sums.big); got != "ok" {
			t.Fatalf("read after the failed pull: %s\nlazysnap log:\n%s", got, n.log())
		}
	})
	for _, secret := range []string{"first-password", "second-password", "wrong-password"} {
		if strings.Contains(n.log(), secret) {
			t.Errorf("lazysnap's logs hold the secret %q", secret)
		}
	}
}
