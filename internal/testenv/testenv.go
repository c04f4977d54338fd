// Package testenv is the one rule for tests that need what a machine may
// lack (root, /dev/fuse, a Debian tool, a generated file): without it the
// test is skipped, or fails when RequireEnv is "1", so that a CI job that
// demands the integration tests cannot pass by skipping them. Tests only
// import it; the environments of internal/testenv/* use it too.
package testenv

import (
	"fmt"
	"os"
	"os/exec"
	"testing"
)

// RequireEnv names the environment variable that, set to "1", turns every
// skip for a missing prerequisite into a test failure.
const RequireEnv = "LAZYSNAP_REQUIRE_INTEGRATION"

// Required reports whether missing prerequisites fail tests (RequireEnv).
func Required() bool { return os.Getenv(RequireEnv) == "1" }

// Unavailable skips t with the reason, or fails it when Required.
func Unavailable(t testing.TB, format string, args ...any) {
	t.Helper()
	reason := fmt.Sprintf(format, args...)
	if Required() {
		t.Fatalf("integration prerequisite missing (%s=1): %s", RequireEnv, reason)
	}
	t.Skipf("integration test skipped: %s (set %s=1 to fail instead)", reason, RequireEnv)
}

// NeedRoot is Unavailable unless the test runs as root; why says what
// for.
func NeedRoot(t testing.TB, why string) {
	t.Helper()
	if os.Geteuid() != 0 {
		Unavailable(t, "needs root (%s)", why)
	}
}

// NeedFUSE is Unavailable unless the test can mount FUSE filesystems:
// root and /dev/fuse.
func NeedFUSE(t testing.TB) {
	t.Helper()
	if _, err := os.Stat("/dev/fuse"); err != nil {
		Unavailable(t, "FUSE mounts need /dev/fuse: %v", err)
	}
	NeedRoot(t, "FUSE mounts")
}

// LookPath finds the program name (from the Debian package pkg), or is
// Unavailable.
func LookPath(t testing.TB, name, pkg string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		Unavailable(t, "%s not installed (Debian package %s): %v", name, pkg, err)
	}
	return p
}

// ReadFile reads a file the test needs but the repository does not hold
// (a static busybox, a generated rootfs tar; hint says how to get it), or
// is Unavailable.
func ReadFile(t testing.TB, path, hint string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		Unavailable(t, "%s: %v (%s)", path, err, hint)
	}
	return b
}
