package snapshotter_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/containerd/containerd/v2/core/snapshots"
	"github.com/containerd/errdefs"
	"github.com/opencontainers/go-digest"

	"github.com/lazysnap/lazysnap/snapshotter"
)

// pullFS is a fakeFS whose layers are not lazy (Mount fails with
// ReasonNotLazy) and which pulls them itself: Pull writes the layer's
// files into the directory and answers the diff ID it is told.
type pullFS struct {
	*fakeFS
	diffID  map[string]digest.Digest // layer digest → diff ID Pull reports
	pullErr error
	pulls   []string // dirs pulled into
	notLazy []string // why each was not lazy, as Pull was told
}

func (p *pullFS) Pull(ctx context.Context, req snapshotter.PullRequest) (snapshotter.PullResult, error) {
	dir := req.Dir
	src, err := snapshotter.ParseLayerSource(req.Labels)
	if err != nil {
		return snapshotter.PullResult{}, err
	}
	p.pulls, p.notLazy = append(p.pulls, dir), append(p.notLazy, req.NotLazy)
	if err := os.WriteFile(filepath.Join(dir, "pulled"), []byte(src.Digest.String()), 0o644); err != nil {
		return snapshotter.PullResult{}, err
	}
	if p.pullErr != nil {
		return snapshotter.PullResult{}, p.pullErr
	}
	return snapshotter.PullResult{DiffID: p.diffID[src.Digest.String()], Bytes: 1000}, nil
}

// TestPullNotLazy: a layer that is not lazy is pulled by the Puller into
// the snapshot and committed as an ordinary snapshot under the target
// (containerd skips it); a diff ID that does not give the target chain ID,
// or a failed Pull, leaves no snapshot and fails Prepare with the reason;
// WithoutPull hands the layer back to containerd.
func TestPullNotLazy(t *testing.T) {
	requireRoot(t)
	d1, d2 := digestOf("gzip layer 1"), digestOf("gzip layer 2")
	diff1, diff2 := digest.FromString("tar 1"), digest.FromString("tar 2")
	chain1 := diff1.String()
	chain2 := digest.FromString(chain1 + " " + diff2.String()).String()
	for _, tc := range []struct {
		name     string
		opts     []snapshotter.Opt
		diff2    digest.Digest
		pullErr  error
		wantErr  string // "" : layer 2 committed by the pull
		wantBack bool   // layer 2 handed back to containerd
	}{
		{"pulled", nil, diff2, nil, "", false},
		{"diff ID gives another chain ID", nil, digest.FromString("other tar"), nil, "diff ID does not match the target chain ID", false},
		{"pull fails", nil, diff2, errors.New("unpack: digest mismatch: the registry sent another blob"), "digest mismatch", false},
		{"pulling off", []snapshotter.Opt{snapshotter.WithoutPull()}, diff2, nil, "", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, _ := testCtx(t)
			fs := &pullFS{fakeFS: newFakeFS(), diffID: map[string]digest.Digest{d1: diff1, d2: tc.diff2}, pullErr: nil}
			for _, d := range []string{d1, d2} {
				fs.fail[d] = fmt.Errorf("no TOC: %w", snapshotter.ReasonNotLazy)
			}
			sn, _ := newSnapshotter(t, ctx, fs, tc.opts...)
			l1 := layerLabels(chain1, d1)
			if _, err := sn.Prepare(ctx, "extract-1", "", snapshots.WithLabels(l1)); !tc.wantBack && !errdefs.IsAlreadyExists(err) {
				t.Fatalf("Prepare of layer 1: %v, want AlreadyExists", err)
			}
			if tc.wantBack {
				if err := sn.Commit(ctx, chain1, "extract-1"); err != nil {
					t.Fatal(err)
				}
			}
			fs.pullErr = tc.pullErr
			ms, err := sn.Prepare(ctx, "extract-2", chain1, snapshots.WithLabels(layerLabels(chain2, d2)))
			switch {
			case tc.wantBack:
				if err != nil || len(ms) == 0 || len(fs.pulls) != 0 {
					t.Fatalf("Prepare: %v, %d mounts, %d pulls; want the layer handed back", err, len(ms), len(fs.pulls))
				}
				return
			case tc.wantErr != "":
				if err == nil || errdefs.IsAlreadyExists(err) || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("Prepare: %v, want an error saying %q", err, tc.wantErr)
				}
				for _, k := range []string{chain2, "extract-2"} {
					if _, err := sn.Stat(ctx, k); !errdefs.IsNotFound(err) {
						t.Errorf("Stat(%s) after the failed pull: %v, want NotFound", k, err)
					}
				}
				if _, err := os.Stat(fs.pulls[1]); !errors.Is(err, os.ErrNotExist) {
					t.Errorf("the failed pull's directory is left: %v", err)
				}
				fbs := sn.Fallbacks()
				if len(fbs) != 1 || fbs[0].Reason != snapshotter.ReasonPullFailed || !strings.Contains(fbs[0].Err, tc.wantErr) || !strings.Contains(fbs[0].Err, "no TOC") {
					t.Errorf("Fallbacks = %+v, want one %s with the reason and why the layer was not lazy", fbs, snapshotter.ReasonPullFailed)
				}
				return
			}
			if !errdefs.IsAlreadyExists(err) {
				t.Fatalf("Prepare of layer 2: %v, want AlreadyExists", err)
			}
			info, err := sn.Stat(ctx, chain2)
			if err != nil || info.Kind != snapshots.KindCommitted || info.Parent != chain1 || info.Labels[snapshotter.LabelRemote] != "" || info.Labels[snapshotter.LabelLineRate] != "true" {
				t.Fatalf("Stat(chain2) = %+v, %v; want an ordinary committed snapshot over chain1", info, err)
			}
			if u, err := sn.Usage(ctx, chain2); err != nil || u.Size == 0 {
				t.Errorf("Usage = %+v, %v; want the pulled files' size", u, err)
			}
			cms, err := sn.Prepare(ctx, "container", chain2)
			if err != nil {
				t.Fatal(err)
			}
			root := mountAt(t, cms)
			if got := readFile(t, filepath.Join(root, "pulled")); got != d2 {
				t.Errorf("pulled file = %q, want layer 2's", got)
			}
			if len(fs.notLazy) != 2 || !strings.Contains(fs.notLazy[1], "no TOC") {
				t.Errorf("Pull was told %q, want why Mount found the layer not lazy", fs.notLazy)
			}
			if st := sn.Stats(); st.Pulls != 2 || st.PulledBytes != 2000 || len(st.Fallbacks) != 0 || len(sn.Fallbacks()) != 0 {
				t.Errorf("Stats = %+v, fallbacks %+v; want 2 pulls and no fallback", st, sn.Fallbacks())
			}
		})
	}
}
