package containerd

import (
	"slices"
	"testing"
)

func TestParseMajorVersion(t *testing.T) {
	for _, tc := range []struct {
		name, out string
		want      int // -1: an error
	}{
		{"debian 1.6", "containerd github.com/containerd/containerd 1.6.20~ds1 1.6.20~ds1-1+deb12u3\n", 1},
		{"upstream 1.7", "containerd github.com/containerd/containerd v1.7.35 abcdef0\n", 1},
		{"2.x from go install", "containerd github.com/containerd/containerd/v2 2.4.2+unknown \n", 2},
		{"2.x release", "containerd github.com/containerd/containerd/v2 v2.1.4 75cb2b7193e4e490e9fbdc236c0e811ccaba3376\n", 2},
		{"too short", "containerd\n", -1},
		{"not a version", "containerd github.com/containerd/containerd dev\n", -1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := parseMajorVersion(tc.out)
			if err != nil {
				got = -1
			}
			if got != tc.want {
				t.Errorf("parseMajorVersion(%q) = %d (%v), want %d", tc.out, got, err, tc.want)
			}
		})
	}
}

func TestConfigForVersion(t *testing.T) {
	for _, tc := range []struct {
		name          string
		major         int
		version       int
		disabled, not string // a plugin disabled, and one not
	}{
		{"1.x", 1, 2, "io.containerd.grpc.v1.cri", "io.containerd.nri.v1.nri"},
		{"2.x", 2, 3, "io.containerd.nri.v1.nri", "io.containerd.snapshotter.v1.overlayfs"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if v := configVersion(tc.major); v != tc.version {
				t.Errorf("config version %d, want %d", v, tc.version)
			}
			ids := alwaysDisabled(tc.major)
			if !slices.Contains(ids, tc.disabled) || !slices.Contains(ids, "io.containerd.grpc.v1.cri") || slices.Contains(ids, tc.not) {
				t.Errorf("disabled plugins %v: want %s and the CRI plugin, not %s", ids, tc.disabled, tc.not)
			}
		})
	}
}
