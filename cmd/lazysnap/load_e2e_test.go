package main

// The load test (issue 16): many cold starts at once over a registry that
// resets connections, with the disk cache capped below the images.

import (
	"bufio"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/lazysnap/lazysnap/config"
	"github.com/lazysnap/lazysnap/internal/testenv/registry"
	"github.com/lazysnap/lazysnap/remote"
)

// goroutineGroup matches the header of a group of goroutines in a
// debug=1 goroutine profile: "N @ 0x... 0x...".
var goroutineGroup = regexp.MustCompile(`^(\d+) @`)

// managerGoroutines counts the fuse manager's goroutines that run
// lazysnap's library code or go-fuse (its own /debug/pprof/goroutine):
// what mounts, fetches and verifications leave behind when they leak.
// Idle HTTP connections, the runtime's and the command's own goroutines
// are not counted: their number follows connection pools, not mounts.
func (s *stack) managerGoroutines(t *testing.T) (ours int, dump string) {
	t.Helper()
	c := unixClient(filepath.Join(s.dir, "root", config.ManagerSocketName))
	defer c.CloseIdleConnections()
	resp, err := c.Get("http://manager/debug/pprof/goroutine?debug=1")
	if err != nil {
		t.Fatalf("fuse manager goroutines: %v", err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("fuse manager goroutines: %s %v", resp.Status, err)
	}
	n, counted := 0, false
	sc := bufio.NewScanner(strings.NewReader(string(b)))
	for sc.Scan() {
		line := sc.Text()
		if m := goroutineGroup.FindStringSubmatch(line); m != nil {
			n, _ = strconv.Atoi(m[1])
			counted = false
			continue
		}
		if !counted && strings.HasPrefix(line, "#") &&
			(strings.Contains(line, "github.com/lazysnap/lazysnap/") || strings.Contains(line, "github.com/hanwen/go-fuse/")) {
			ours += n
			counted = true
		}
	}
	return ours, string(b)
}

// fuseMounts lists the FUSE mounts under the stack's directory.
func (s *stack) fuseMounts(t *testing.T) []string {
	t.Helper()
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, line := range strings.Split(string(b), "\n") {
		// id parent major:minor root mountpoint options ... - fstype source ...
		pre, post, ok := strings.Cut(line, " - ")
		f := strings.Fields(pre)
		if ok && len(f) > 4 && strings.HasPrefix(f[4], s.dir) && strings.HasPrefix(post, "fuse") {
			out = append(out, f[4])
		}
	}
	return out
}

// TestManyContainers is the load test: 30 containers start at once from 5
// lazy images, cold, with the disk chunk cache capped below the images'
// size and the registry resetting every 50th blob request (2%) after
// 16 KiB of its body. Every container must read its files right; every
// layer must end verified against its blob digest (the gaps the capped
// cache lost fetched again) and none bad; the cache must stay under its
// cap and the daemons' memory bounded; and once the images are removed no
// FUSE mount and no goroutine of lazysnap's (the fuse manager's, by its
// goroutine profile) may be left. Nothing here depends on timing: the
// waits are bounded polls of conditions.
func TestManyContainers(t *testing.T) {
	const (
		images     = 5
		containers = 30
		// each image is ~30 MB of blobs (two layers: busybox, and 28 MiB
		// of incompressible data): 150 MB in all, five times the cap
		cacheMax    = 32 << 20
		memoryCache = 16 << 20
		// memoryLimit is each daemon's GOMEMLIMIT (memory_limit), as a
		// node sets it: without one, the Go heap of a manager under 30
		// cold starts grows to twice what is live before it collects,
		// and the peak says more about the GC's pacing than about
		// lazysnap.
		memoryLimit = 96 << 20
		// peakBound bounds the peak RSS of serve, the fuse manager and
		// its fd keeper together. The data a container reads goes
		// through the content files, not memory; what is held is the
		// memory cache (16 MiB), the indexes, spans in flight (8 MiB
		// prefetch, 1 MiB background, a few at once per layer), two
		// verifications (one range each), and the Go runtime's overhead
		// of each process (~30 MiB; the keeper holds only descriptors).
		peakBound = 256 << 20
	)
	// GOMEMLIMIT as memory_limit sets it (a top-level key, which
	// startStack's extra config cannot hold); serve and the manager it
	// starts inherit it
	t.Setenv("GOMEMLIMIT", strconv.Itoa(memoryLimit))
	s := startStack(t, fmt.Sprintf("[cache]\n  max_bytes = %d\n  memory_bytes = %d\n", cacheMax, memoryCache))
	s.ctr(t, "snapshots", "--snapshotter", "lazysnap", "ls") // containerd's connection to lazysnap is up
	baseline, _ := s.managerGoroutines(t)
	data := busyboxLayers(t)[1]
	wantData := sha256Of(t, data, "data/big") + " " + sha256Of(t, data, "data/other")

	s.wan.Reset()
	s.wan.SetFaults(registry.Faults{ResetEvery: 50, ResetAfter: 16 << 10})
	refs := make([]string, images)
	var wg sync.WaitGroup
	errs := make(chan error, containers)
	for i := range images {
		_, dir := buildImages(t, fmt.Sprint("variant ", i))
		refs[i], _ = s.pushLayout(t, dir, fmt.Sprintf("many%d", i), "v1")
	}
	for i := range images {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if out := s.pull(t, refs[i]); !strings.Contains(out, "2 of 2 layers lazy") {
				errs <- fmt.Errorf("pull %s: %s", refs[i], out)
			}
		}()
	}
	wg.Wait()
	for i := range containers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			script := "cat /data/variant; for f in big other; do s=$(sha256sum /data/$f) || echo \" sha256sum $f failed: $?\"; echo \" $s\" | head -c 65; done"
			out, err := s.ctrd.Ctr(t, "run", "--rm", "--snapshotter", "lazysnap", refs[i%images], fmt.Sprintf("many-%d", i), "/bin/sh", "-c", script)
			if want := fmt.Sprintf("variant %d %s", i%images, wantData); err == nil && string(out) != want {
				err = fmt.Errorf("container %d printed %q, want %q", i, out, want)
			}
			if err != nil {
				errs <- fmt.Errorf("container %d: %v\n%s", i, err, out)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if t.Failed() {
		t.Fatalf("lazysnap log:\n%s", s.log())
	}
	st := s.wan.Stats()
	t.Logf("registry: %v", st)
	if st.Resets == 0 {
		t.Fatalf("no connection was reset: %v", st)
	}
	// lazysnap absorbed the resets: no read failed (the kernel would
	// retry a failed read-ahead and hide a missing retry)
	if n := strings.Count(s.log(), "layer read failed"); n > 0 {
		t.Fatalf("%d layer reads failed under the resets\nlazysnap log:\n%s", n, s.log())
	}

	// every lazy layer completes in the background and is verified
	waitFor(t, 3*time.Minute, "every layer verified", func() (bool, string) {
		rep := s.status(t)
		var states []string
		done := 0
		for _, img := range rep.Images {
			for _, l := range img.Layers {
				states = append(states, l.Digest+": "+l.State+", "+l.Verification)
				if strings.HasPrefix(l.Verification, "bad") {
					t.Fatalf("layer %s of %s marked bad: %s\n%s", l.Digest, img.Ref, l.Verification, s.log())
				}
				if l.Verification == remote.VerifyVerified {
					done++
				}
			}
		}
		return done == 2*images && len(states) == 2*images, strings.Join(states, "\n")
	})
	rep := s.status(t)
	c, v := rep.Cache, rep.Verification
	if c == nil || v == nil {
		t.Fatalf("status without cache or verification: %+v", rep)
	}
	t.Logf("cache: %d bytes in %d entries (cap %d), %d evictions; verification: %+v", c.DiskBytes, c.DiskEntries, c.DiskMaxBytes, c.Evictions, *v)
	if c.DiskMaxBytes != cacheMax || c.DiskBytes > cacheMax || c.Evictions == 0 {
		t.Errorf("disk cache %d bytes of cap %d (%d evictions): want it capped at %d and evicting", c.DiskBytes, c.DiskMaxBytes, c.Evictions, cacheMax)
	}
	if v.Verified != 2*images || v.Bad != 0 || v.FetchedBytes == 0 {
		t.Errorf("verification %+v: want %d layers verified, the gaps of the capped cache fetched", *v, 2*images)
	}
	if len(rep.BadLayers) != 0 {
		t.Errorf("bad layers: %+v", rep.BadLayers)
	}
	var peak int64
	for _, pid := range s.stackPIDs(t) {
		p := peakRSS(t, pid)
		cmdline, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
		t.Logf("peak RSS of %d (%s): %.1f MiB", pid, strings.Fields(strings.ReplaceAll(string(cmdline), "\x00", " "))[1:2], float64(p)/(1<<20))
		peak += p
	}
	t.Logf("peak RSS of lazysnap's processes: %.1f MiB (bound %d MiB)", float64(peak)/(1<<20), peakBound>>20)
	if peak > peakBound {
		t.Errorf("peak RSS %.1f MiB, want at most %d MiB", float64(peak)/(1<<20), peakBound>>20)
	}

	// removing the images unmounts every layer, and leaves nothing running
	loaded, _ := s.managerGoroutines(t)
	t.Logf("fuse manager: %d goroutines in lazysnap or go-fuse code with the images mounted, %d before", loaded, baseline)
	if loaded <= baseline {
		t.Fatalf("the goroutine count does not see the mounts: %d with %d layers mounted, %d before", loaded, 2*images, baseline)
	}
	s.wan.SetFaults(registry.Faults{})
	for _, ref := range refs {
		s.ctr(t, "images", "rm", "--sync", ref)
	}
	if m := s.fuseMounts(t); len(m) != 0 {
		t.Errorf("FUSE mounts left after the images were removed: %v", m)
	}
	waitFor(t, 30*time.Second, "lazysnap's goroutines back to their number before the load", func() (bool, string) {
		n, dump := s.managerGoroutines(t)
		return n <= baseline, fmt.Sprintf("%d goroutines in lazysnap or go-fuse code, %d before:\n%s", n, baseline, dump)
	})
	t.Logf("fuse manager: at most %d goroutines in lazysnap or go-fuse code, as before the load", baseline)
}
