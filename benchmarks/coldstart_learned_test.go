package benchmarks

// Mode learned: the measured cold start is the second node of a cluster.
// A first node, unmeasured, runs the same workload on the unprofiled image
// with [profile] publish = true; lazysnap records what the start reads and
// pushes the profile to the registry (an OCI artifact whose subject is the
// image's manifest; Debian's docker-registry has no referrers API, so
// through the referrers tag schema, tag sha256-<hex>). The measured node,
// fresh and in the default configuration, finds it there and prefetches it
// at mount.
//
// Push goes through the harness's hosts.toml: its server is the WAN with
// no capabilities line, which containerd's hosts loader reads as pull,
// resolve and push; the WAN proxy forwards every method to the registry.
//
// Each learned run pushes the unprofiled image into a repository of its
// own (its blobs mounted from bench/<image>), so that every measured run
// sees exactly one published profile, its own first node's, and no other
// mode's image ever has a profile in the registry.

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	ctrdenv "github.com/lazysnap/lazysnap/internal/testenv/containerd"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

const (
	// learnDeadline bounds the wait for the first node's recording to be
	// stored (it ends [profile] quiet, 2 s by default, after the last new
	// read) and then for its publish to reach the registry
	learnDeadline   = 90 * time.Second
	publishDeadline = 30 * time.Second
)

// learnProfile pushes v into a repository of its own for this run, runs
// the first node's cold start there and waits until its profile is in the
// registry. It returns the reference the measured node pulls.
func (b *bench) learnProfile(t *testing.T, w workload, v *imageVariant, run int) (string, error) {
	repo := fmt.Sprintf("bench-learned/%s-%s-run%d", v.image, w.name, run)
	md, err := b.copyImage(context.Background(), v, repo)
	if err != nil {
		return "", fmt.Errorf("push %s for the learned run: %w", repo, err)
	}
	ref := b.reg.Ref(repo, v.tag)
	var werr error
	start := time.Now()
	ok := t.Run("first-node", func(t *testing.T) {
		// a subtest, so that its containerd and lazysnap are stopped
		// before the measured node starts
		werr = b.firstNode(t, w, v, ref, repo, md)
		if werr != nil {
			t.Log(werr)
		}
	})
	if werr != nil {
		return "", fmt.Errorf("first node: %w", werr)
	}
	if !ok {
		return "", fmt.Errorf("first node failed to set up (see the test log)")
	}
	t.Logf("first node: profile of %s learned and published in %s", ref, time.Since(start).Round(100*time.Millisecond))
	return ref, nil
}

// firstNode is the unmeasured cold start that learns and publishes the
// profile.
func (b *bench) firstNode(t *testing.T, w workload, v *imageVariant, ref, repo string, md ocispec.Descriptor) error {
	ctx, cancel := context.WithTimeout(context.Background(), 2*runTimeout)
	defer cancel()
	d, ctrd, _, err := b.nodePull(ctx, t, "learned-first", "[profile]\n  publish = true\n", ref)
	if err != nil {
		return err
	}
	args := append([]string{"--address", ctrd.Address(), "--namespace", ctrd.Namespace(),
		"run", "--rm", "--snapshotter", "lazysnap", ref, "first-" + w.name}, w.argv...)
	_, _, stdout, stderr, err := timedRun(ctx, "ctr", args...)
	if err != nil || stdout != b.images.expect[w.name] {
		return fmt.Errorf("ctr run: %v, printed %q (stderr %s)%s", err, stdout, strings.TrimSpace(stderr), d.keepLog(b.cfg.logDir, t.Name()))
	}

	// stored locally once the recording ends
	key := md.Digest.String()
	cfgPath := filepath.Join(d.dir, "lazysnap.toml")
	var list string
	for deadline := time.Now().Add(learnDeadline); ; time.Sleep(200 * time.Millisecond) {
		o, err := exec.CommandContext(ctx, b.bin, "profile", "--config", cfgPath, "list").CombinedOutput()
		list = string(o)
		if err == nil && strings.Contains(list, key) {
			break
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("no profile of %s in 'lazysnap profile list' after %s: %v\n%s%s", key, learnDeadline, err, list, d.keepLog(b.cfg.logDir, t.Name()))
		}
	}
	// then published: the referrers tag schema's index, straight from
	// the registry (not through the WAN), with exactly one profile
	tag := strings.Replace(key, ":", "-", 1)
	var last string
	for deadline := time.Now().Add(publishDeadline); ; time.Sleep(200 * time.Millisecond) {
		n, err := b.referrers(ctx, repo, tag)
		if err == nil && n == 1 {
			break
		}
		last = fmt.Sprintf("%d referrers, %v", n, err)
		if err == nil && n > 1 {
			return fmt.Errorf("%s:%s lists %d referrers, want exactly the first node's profile", repo, tag, n)
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("the profile of %s is stored but not in the registry (%s:%s) after %s: %s%s", key, repo, tag, publishDeadline, last, d.keepLog(b.cfg.logDir, t.Name()))
		}
	}
	return nil
}

// nodePull starts an unmeasured node (a lazysnap named name, in the
// default configuration plus extra, and a containerd using it; both stop
// at t's cleanup) and pulls ref there with lazysnap pull, whose output it
// returns.
func (b *bench) nodePull(ctx context.Context, t *testing.T, name, extra, ref string) (*daemon, *ctrdenv.Containerd, string, error) {
	d := b.startLazysnap(t, mode{name: name, kind: "lazysnap"}, extra)
	t.Cleanup(d.stop)
	plugin := fmt.Sprintf("[proxy_plugins.lazysnap]\n  type = \"snapshot\"\n  address = %q\n", d.sock)
	ctrd := ctrdenv.Start(t, ctrdenv.Options{ExtraConfig: plugin, LogLevel: "warn", Dir: b.dir})
	t.Cleanup(d.stop) // before containerd's cleanup
	out, err := exec.CommandContext(ctx, b.bin, "pull", "--address", ctrd.Address(), "--namespace", ctrd.Namespace(),
		"--snapshotter", "lazysnap", "--hosts-dir", b.hosts, ref).CombinedOutput()
	if err != nil {
		return d, ctrd, string(out), fmt.Errorf("pull %s: %v\n%s%s", ref, err, out, d.keepLog(b.cfg.logDir, t.Name()))
	}
	return d, ctrd, string(out), nil
}

// referrers is the number of manifests in repo's index tagged tag (0, nil
// while the tag is absent: a HEAD first, as a client polling would).
func (b *bench) referrers(ctx context.Context, repo, tag string) (int, error) {
	u := b.reg.URL() + "/v2/" + repo + "/manifests/" + url.PathEscape(tag)
	do := func(method string) (*http.Response, error) {
		req, err := http.NewRequestWithContext(ctx, method, u, nil)
		if err != nil {
			return nil, err
		}
		req.Header.Set("Accept", ocispec.MediaTypeImageIndex)
		return b.reg.Client().Do(req)
	}
	resp, err := do(http.MethodHead)
	if err != nil {
		return 0, err
	}
	resp.Body.Close()
	switch resp.StatusCode {
	case http.StatusNotFound:
		return 0, nil
	case http.StatusOK:
	default:
		return 0, fmt.Errorf("HEAD %s: %s", u, resp.Status)
	}
	if resp, err = do(http.MethodGet); err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	var idx ocispec.Index
	if err := json.NewDecoder(io.LimitReader(resp.Body, 4<<20)).Decode(&idx); err != nil {
		return 0, fmt.Errorf("GET %s: %w", u, err)
	}
	return len(idx.Manifests), nil
}

// copyImage puts v into repo: its blobs mounted from bench/<image>, where
// push put them (uploaded again if the registry will not mount), then its
// manifest under v's tag. It returns the manifest's descriptor.
func (b *bench) copyImage(ctx context.Context, v *imageVariant, repo string) (ocispec.Descriptor, error) {
	md, m, err := readManifest(v.layout)
	if err != nil {
		return md, err
	}
	p := b.reg.Pusher()
	for _, d := range append([]ocispec.Descriptor{m.Config}, m.Layers...) {
		u := fmt.Sprintf("%s/v2/%s/blobs/uploads/?mount=%s&from=%s", b.reg.URL(), repo, url.QueryEscape(d.Digest.String()), url.QueryEscape("bench/"+v.image))
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, u, nil)
		if err != nil {
			return md, err
		}
		resp, err := b.reg.Client().Do(req)
		if err != nil {
			return md, err
		}
		resp.Body.Close()
		if resp.StatusCode == http.StatusCreated {
			continue
		}
		f, err := openBlob(v.layout, d)
		if err != nil {
			return md, err
		}
		err = p.PushBlobReader(ctx, repo, f, d.Size, d.Digest)
		f.Close()
		if err != nil {
			return md, err
		}
	}
	mb, err := readBlob(v.layout, md)
	if err != nil {
		return md, err
	}
	_, err = p.PushManifest(ctx, repo, v.tag, md.MediaType, mb)
	return md, err
}
