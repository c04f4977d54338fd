package snapshotter

import (
	"strings"
	"testing"

	"github.com/containerd/containerd/v2/core/snapshots"
)

// FuzzIDMapping: the ID-map labels become mount options containerd parses
// and the owner of an upper dir: whatever the labels hold, idMappingOf does
// not panic, and what it accepts is ranges of decimal IDs only (nothing
// that could read as another mount option) with the root inside them.
func FuzzIDMapping(f *testing.F) {
	for _, s := range [][2]string{
		{"0:100000:65536", "0:100000:65536"},
		{"0:1000:1,1:100000:65536", "0:1000:1"},
		{"1:2:3", "0:0:1"},
		{"0:100000:65536,lowerdir=/", "0:1:1"},
		{"0:4294967295:1", "0:00:1"},
	} {
		f.Add(s[0], s[1])
	}
	f.Fuzz(func(t *testing.T, uid, gid string) {
		m, err := idMappingOf(map[string]string{snapshots.LabelSnapshotUIDMapping: uid, snapshots.LabelSnapshotGIDMapping: gid})
		if err != nil {
			return
		}
		for _, o := range m.options() {
			if strings.Trim(o[len("uidmap="):], "0123456789:,") != "" {
				t.Fatalf("accepted option %q", o)
			}
		}
		if m.rootUID < 0 || m.rootGID < 0 || m.rootUID > 1<<32-1 || m.rootGID > 1<<32-1 {
			t.Fatalf("root %d:%d", m.rootUID, m.rootGID)
		}
	})
}
