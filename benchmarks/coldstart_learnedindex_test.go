package benchmarks

// Mode soci-learned (issue 24): the measured cold start is the second node
// of a cluster whose first node learned the image's SOCI index. The image
// is the unmodified gzip one with no index (linerate's). A first node,
// unmeasured (its own containerd and lazysnap, [soci] publish_repository
// set, otherwise the default configuration), pulls it: every layer at
// line rate, each one's zTOC kept, and one v1 SOCI index of the image
// pushed to the publish repository once the pull is over. The measured
// node (a fresh containerd and lazysnap root, [soci] trusted_repositories
// naming that repository, otherwise the default configuration) finds the
// index among the manifest's referrers there and mounts every layer lazily
// (format soci); a run where it does not fails.
//
// Each run pushes the image into a repository of its own and publishes
// into an index repository of its own, so that every measured run sees
// exactly one published index, its own first node's.

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"
)

// sociLearned is mode.soci of the mode whose SOCI index a previous node's
// line-rate pull built and published.
const sociLearned = "learned"

// learnIndex pushes v (the gzip image) into a repository of its own for
// this run, has a first node pull it at line rate and publish its SOCI
// index, and waits until the index is in the registry. It returns the
// reference the measured node pulls and the lazysnap configuration that
// trusts the index repository.
func (b *bench) learnIndex(t *testing.T, w workload, v *imageVariant, run int) (ref, extra string, err error) {
	repo := fmt.Sprintf("bench-soci-learned/%s-%s-run%d", v.image, w.name, run)
	indexRepo := fmt.Sprintf("bench-soci-index/%s-%s-run%d", v.image, w.name, run)
	md, err := b.copyImage(context.Background(), v, repo)
	if err != nil {
		return "", "", fmt.Errorf("push %s for the soci-learned run: %w", repo, err)
	}
	ref = b.reg.Ref(repo, v.tag)
	start := time.Now()
	ok := t.Run("first-node", func(t *testing.T) {
		// a subtest, so that its containerd and lazysnap are stopped
		// before the measured node starts
		err = b.indexingNode(t, v, ref, b.reg.Host+"/"+indexRepo)
		if err == nil {
			// the referrers tag schema's index, straight from the
			// registry: exactly one SOCI index, this pull's
			tag := strings.Replace(md.Digest.String(), ":", "-", 1)
			var n int
			for deadline := time.Now().Add(publishDeadline); ; time.Sleep(200 * time.Millisecond) {
				if n, err = b.referrers(context.Background(), indexRepo, tag); err == nil && n > 0 || time.Now().After(deadline) {
					break
				}
			}
			switch {
			case err == nil && n == 0:
				err = fmt.Errorf("no SOCI index of %s in %s after %s", ref, indexRepo, publishDeadline)
			case err == nil && n > 1:
				err = fmt.Errorf("%s:%s lists %d referrers, want one SOCI index for the pull", indexRepo, tag, n)
			}
		}
		if err != nil {
			t.Log(err)
		}
	})
	if err != nil {
		return "", "", fmt.Errorf("first node: %w", err)
	}
	if !ok {
		return "", "", fmt.Errorf("first node failed to set up (see the test log)")
	}
	t.Logf("first node: SOCI index of %s learned and published in %s", ref, time.Since(start).Round(100*time.Millisecond))
	return ref, fmt.Sprintf("[soci]\n  trusted_repositories = [%q]\n", b.reg.Host+"/"+indexRepo), nil
}

// indexingNode is the unmeasured first node: a pull of ref at line rate by
// a lazysnap publishing to indexRepo. The push runs in the background
// after the pull: the caller waits for it in the registry, while this
// node still runs.
func (b *bench) indexingNode(t *testing.T, v *imageVariant, ref, indexRepo string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 2*runTimeout)
	defer cancel()
	d, _, out, err := b.nodePull(ctx, t, "soci-learned-first", fmt.Sprintf("[soci]\n  publish_repository = %q\n", indexRepo), ref)
	if err != nil {
		return err
	}
	if want := fmt.Sprintf("0 of %d layers lazy, %d pulled at line rate", v.layers, v.layers); !strings.Contains(out, want) {
		return fmt.Errorf("the first node's pull did not pull every layer at line rate (want %q):\n%s%s", want, out, d.keepLog(b.cfg.logDir, t.Name()))
	}
	return nil
}

// notSoci lists the layers whose status is not a lazy mount of format
// soci, "" if none.
func notSoci(layers []map[string]any) string {
	var bad []string
	for _, l := range layers {
		if f, _ := l["format"].(string); f != "soci" {
			bad = append(bad, fmt.Sprintf("%v: format %q, path %v, not lazy %q", l["digest"], f, l["path"], l["not_lazy"]))
		}
	}
	if len(layers) == 0 {
		return "no layer in the status"
	}
	return strings.Join(bad, "; ")
}
