// Package socipeer gives tests the SOCI oracle and peer: the soci-peer
// command (benchmarks/peer/soci), built from awslabs/soci-snapshotter's own
// library in a module of its own. Tests use it to build SOCI indexes
// exactly as `soci convert` does, to read zTOCs with soci's ztoc package,
// and (soci-peer serve) to run soci-snapshotter itself as a containerd
// proxy snapshotter.
package socipeer

import (
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"

	"github.com/lazysnap/lazysnap/internal/testenv"
)

// Env names a prebuilt soci-peer binary, used instead of building one.
const Env = "LAZYSNAP_SOCI_PEER"

var once struct {
	sync.Once
	path string
	err  string
}

// Binary returns the soci-peer binary: $LAZYSNAP_SOCI_PEER, else built
// once per test process into /var/tmp/lazysnap-peer (it needs the Go
// module proxy the first time and Debian's zlib1g-dev). testenv.Unavailable skips
// t when it cannot be had.
func Binary(t testing.TB) string {
	t.Helper()
	if p := os.Getenv(Env); p != "" {
		return p
	}
	once.Do(func() {
		dir, err := peerDir()
		if err != nil {
			once.err = err.Error()
			return
		}
		out := "/var/tmp/lazysnap-peer/soci-peer"
		cmd := exec.Command("go", "build", "-o", out, ".")
		cmd.Dir = dir
		if b, err := cmd.CombinedOutput(); err != nil {
			once.err = "building soci-peer: " + err.Error() + "\n" + string(b)
			return
		}
		once.path = out
	})
	if once.path == "" {
		testenv.Unavailable(t, "%s", once.err)
	}
	return once.path
}

// peerDir finds benchmarks/peer/soci above the working directory.
func peerDir() (string, error) {
	wd, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for d := wd; ; d = filepath.Dir(d) {
		p := filepath.Join(d, "benchmarks", "peer", "soci")
		if _, err := os.Stat(filepath.Join(p, "go.mod")); err == nil {
			return p, nil
		}
		if filepath.Dir(d) == d {
			return "", os.ErrNotExist
		}
	}
}
