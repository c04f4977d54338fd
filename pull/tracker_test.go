package pull

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/containerd/containerd/v2/core/content"
	"github.com/containerd/containerd/v2/core/images"
	"github.com/containerd/containerd/v2/core/snapshots"
	"github.com/containerd/errdefs"
	"github.com/lazysnap/lazysnap/snapshotter"
	"github.com/opencontainers/go-digest"
	"github.com/opencontainers/image-spec/identity"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// fakeStore is the part of a content store the tracker uses.
type fakeStore struct {
	content.Store
	blobs    map[digest.Digest][]byte
	statuses []content.Status
}

func (s *fakeStore) ListStatuses(context.Context, ...string) ([]content.Status, error) {
	return s.statuses, nil
}

func (s *fakeStore) ReaderAt(_ context.Context, desc ocispec.Descriptor) (content.ReaderAt, error) {
	b, ok := s.blobs[desc.Digest]
	if !ok {
		return nil, fmt.Errorf("blob %s: %w", desc.Digest, errdefs.ErrNotFound)
	}
	return readerAt{bytes.NewReader(b)}, nil
}

type readerAt struct{ *bytes.Reader }

func (readerAt) Close() error { return nil }

// fakeSnapshotter answers Stat from infos.
type fakeSnapshotter struct {
	snapshots.Snapshotter
	infos map[string]snapshots.Info
}

func (s *fakeSnapshotter) Stat(_ context.Context, key string) (snapshots.Info, error) {
	if info, ok := s.infos[key]; ok {
		return info, nil
	}
	return snapshots.Info{}, fmt.Errorf("snapshot %s: %w", key, errdefs.ErrNotFound)
}

// image is a two-layer test image: its config, layers and chain IDs.
type image struct {
	config          []byte
	cfgDesc, la, lb ocispec.Descriptor
	manifest        ocispec.Descriptor
	chain, diffIDs  []digest.Digest
}

func testImage() image {
	var im image
	im.diffIDs = []digest.Digest{digest.FromString("diff a"), digest.FromString("diff b")}
	im.chain = identity.ChainIDs(append([]digest.Digest(nil), im.diffIDs...))
	im.config, _ = json.Marshal(ocispec.Image{RootFS: ocispec.RootFS{Type: "layers", DiffIDs: im.diffIDs}})
	im.cfgDesc = ocispec.Descriptor{MediaType: ocispec.MediaTypeImageConfig, Digest: digest.FromBytes(im.config), Size: int64(len(im.config))}
	im.la = ocispec.Descriptor{MediaType: ocispec.MediaTypeImageLayerGzip, Digest: digest.FromString("layer a"), Size: 100}
	im.lb = ocispec.Descriptor{MediaType: ocispec.MediaTypeImageLayerGzip, Digest: digest.FromString("layer b"), Size: 200}
	im.manifest = ocispec.Descriptor{MediaType: ocispec.MediaTypeImageManifest, Digest: digest.FromString("manifest")}
	return im
}

func layer(d ocispec.Descriptor, s State, done int64) Layer {
	return Layer{Digest: d.Digest, Size: d.Size, State: s, Done: done}
}

// TestTracker drives the tracker's handler wrapper the way containerd's
// unpacker does (layer a fetched as a fallback, layer b mounted lazily) and
// checks what Poll reports after each step, in order.
func TestTracker(t *testing.T) {
	ctx := context.Background()
	im := testImage()
	cs := &fakeStore{blobs: map[digest.Digest][]byte{}}
	sn := &fakeSnapshotter{infos: map[string]snapshots.Info{}}
	tr := NewTracker()
	// the wrapped handler: a manifest has the config and layers as children;
	// a blob handled is in the store; release lets a layer "download" finish
	release := map[digest.Digest]chan error{im.la.Digest: make(chan error), im.lb.Digest: make(chan error)}
	h := tr.Wrap(images.HandlerFunc(func(ctx context.Context, desc ocispec.Descriptor) ([]ocispec.Descriptor, error) {
		switch {
		case desc.Digest == im.manifest.Digest:
			return []ocispec.Descriptor{im.cfgDesc, im.la, im.lb}, nil
		case desc.Digest == im.cfgDesc.Digest:
			cs.blobs[im.cfgDesc.Digest] = im.config
		default:
			if err := <-release[desc.Digest]; err != nil {
				return nil, err
			}
		}
		return nil, nil
	}))
	handle := func(d ocispec.Descriptor) chan error {
		done := make(chan error, 1)
		go func() { _, err := h.Handle(ctx, d); done <- err }()
		return done
	}
	var doneA chan error
	steps := []struct {
		name string
		do   func(t *testing.T)
		want []Layer
	}{
		{name: "before the manifest", do: func(*testing.T) {}},
		{name: "manifest known", do: func(t *testing.T) {
			if err := <-handle(im.manifest); err != nil {
				t.Fatal(err)
			}
		}, want: []Layer{layer(im.la, Waiting, 0), layer(im.lb, Waiting, 0)}},
		{name: "config read", do: func(t *testing.T) {
			if err := <-handle(im.cfgDesc); err != nil {
				t.Fatal(err)
			}
		}, want: []Layer{layer(im.la, Waiting, 0), layer(im.lb, Waiting, 0)}},
		{name: "a requested", do: func(t *testing.T) {
			doneA = handle(im.la)
			waitFor(t, func() bool { return tr.Poll(ctx, cs, sn)[0].State == Downloading })
		}, want: []Layer{layer(im.la, Downloading, 0), layer(im.lb, Waiting, 0)}},
		{name: "a downloading", do: func(*testing.T) {
			cs.statuses = []content.Status{{Ref: "layer-" + im.la.Digest.String(), Offset: 40, Total: 100}}
		}, want: []Layer{layer(im.la, Downloading, 40), layer(im.lb, Waiting, 0)}},
		{name: "a downloaded", do: func(t *testing.T) {
			cs.statuses = nil
			release[im.la.Digest] <- nil
			if err := <-doneA; err != nil {
				t.Fatal(err)
			}
		}, want: []Layer{layer(im.la, Unpacking, 0), layer(im.lb, Waiting, 0)}},
		{name: "both snapshots", do: func(*testing.T) {
			sn.infos[im.chain[0].String()] = snapshots.Info{Name: im.chain[0].String()}
			sn.infos[im.chain[1].String()] = snapshots.Info{Name: im.chain[1].String(), Labels: map[string]string{snapshotter.LabelRemote: snapshotter.RemoteValue}}
		}, want: []Layer{layer(im.la, Unpacked, 0), layer(im.lb, Lazy, 0)}},
		{name: "final states stick", do: func(*testing.T) {
			delete(sn.infos, im.chain[1].String())
		}, want: []Layer{layer(im.la, Unpacked, 0), layer(im.lb, Lazy, 0)}},
	}
	for _, st := range steps {
		ok := t.Run(st.name, func(t *testing.T) {
			st.do(t)
			if got := tr.Poll(ctx, cs, sn); fmt.Sprint(got) != fmt.Sprint(st.want) {
				t.Fatalf("Poll = %v, want %v", got, st.want)
			}
		})
		if !ok {
			return // later steps build on this one
		}
	}
	if got := tr.ManifestLayers(); len(got) != 2 || got[0].Digest != im.la.Digest || got[1].Digest != im.lb.Digest {
		t.Errorf("ManifestLayers = %v, want the two layers", got)
	}
}

// TestTrackerFailedFetch: a layer whose fetch failed is no longer shown as
// downloading, and the handler's error reaches the caller.
func TestTrackerFailedFetch(t *testing.T) {
	ctx := context.Background()
	im := testImage()
	tr := NewTracker()
	tr.layers = []ocispec.Descriptor{im.la, im.lb}
	h := tr.Wrap(images.HandlerFunc(func(context.Context, ocispec.Descriptor) ([]ocispec.Descriptor, error) {
		return nil, errors.New("registry down")
	}))
	if _, err := h.Handle(ctx, im.lb); err == nil {
		t.Fatal("the wrapper swallowed the handler's error")
	}
	cs := &fakeStore{blobs: map[digest.Digest][]byte{}}
	sn := &fakeSnapshotter{infos: map[string]snapshots.Info{}}
	if got := tr.Poll(ctx, cs, sn); got[1].State != Waiting {
		t.Errorf("after a failed fetch: %v, want waiting", got[1])
	}
}

func TestFetchState(t *testing.T) {
	im := testImage()
	other := digest.FromString("other")
	for _, tc := range []struct {
		name     string
		fetching map[digest.Digest]bool
		statuses []content.Status
		want     State
		done     int64
	}{
		{name: "nothing known", want: Waiting},
		{name: "handler running, no ingest yet", fetching: map[digest.Digest]bool{im.la.Digest: true}, want: Downloading},
		{name: "ingest by expected digest", statuses: []content.Status{{Ref: "x", Expected: im.la.Digest, Offset: 7}}, want: Downloading, done: 7},
		{name: "ingest by ref suffix", statuses: []content.Status{{Ref: "layer-" + im.la.Digest.String(), Offset: 9}}, want: Downloading, done: 9},
		{name: "another blob's ingest", statuses: []content.Status{{Ref: "layer-" + other.String(), Expected: other, Offset: 9}}, want: Waiting},
		{name: "handler done", fetching: map[digest.Digest]bool{im.la.Digest: false},
			statuses: []content.Status{{Expected: im.la.Digest, Offset: 100}}, want: Unpacking},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, done := fetchState(im.la, tc.fetching, tc.statuses)
			if s != tc.want || done != tc.done {
				t.Errorf("fetchState = %v, %d; want %v, %d", s, done, tc.want, tc.done)
			}
		})
	}
}

func TestReadChain(t *testing.T) {
	ctx := context.Background()
	im := testImage()
	bad := ocispec.Descriptor{MediaType: ocispec.MediaTypeImageConfig, Digest: digest.FromString("{"), Size: 1}
	cs := &fakeStore{blobs: map[digest.Digest][]byte{im.cfgDesc.Digest: im.config, bad.Digest: []byte("{")}}
	for _, tc := range []struct {
		name   string
		config ocispec.Descriptor
		n      int
		want   []digest.Digest
	}{
		{name: "config with the layers", config: im.cfgDesc, n: 2, want: im.chain},
		{name: "config not in the store", config: ocispec.Descriptor{Digest: digest.FromString("absent"), Size: 3}, n: 2},
		{name: "not JSON", config: bad, n: 2},
		{name: "other layer count than the manifest", config: im.cfgDesc, n: 3},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := readChain(ctx, cs, tc.config, tc.n); fmt.Sprint(got) != fmt.Sprint(tc.want) {
				t.Errorf("readChain = %v, want %v", got, tc.want)
			}
		})
	}
}

func TestStateString(t *testing.T) {
	for _, tc := range []struct {
		s     State
		want  string
		final bool
	}{
		{Waiting, "waiting", false},
		{Downloading, "downloading", false},
		{Unpacking, "downloaded, unpacking", false},
		{Unpacked, "unpacked", true},
		{Lazy, "lazy (remote snapshot)", true},
		{State(9), "state 9", false},
	} {
		t.Run(tc.want, func(t *testing.T) {
			if tc.s.String() != tc.want || tc.s.Final() != tc.final {
				t.Errorf("%d: %q, final %v; want %q, %v", int(tc.s), tc.s.String(), tc.s.Final(), tc.want, tc.final)
			}
		})
	}
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	for range 1000 {
		if cond() {
			return
		}
		time.Sleep(time.Millisecond)
	}
	t.Fatal("condition not reached")
}

// TestTrackerLineRate: a layer the snapshotter pulled itself, committed
// with LabelLineRate, shows as pulled at line rate.
func TestTrackerLineRate(t *testing.T) {
	ctx := context.Background()
	im := testImage()
	tr := NewTracker()
	tr.layers, tr.config, tr.haveConf = []ocispec.Descriptor{im.la, im.lb}, im.cfgDesc, true
	cs := &fakeStore{blobs: map[digest.Digest][]byte{im.cfgDesc.Digest: im.config}}
	sn := &fakeSnapshotter{infos: map[string]snapshots.Info{
		im.chain[0].String(): {Name: im.chain[0].String(), Kind: snapshots.KindCommitted, Labels: map[string]string{snapshotter.LabelLineRate: "true"}},
		im.chain[1].String(): {Name: im.chain[1].String(), Kind: snapshots.KindCommitted, Labels: map[string]string{snapshotter.LabelLineRate: "true"}},
	}}
	want := []Layer{layer(im.la, LineRate, 0), layer(im.lb, LineRate, 0)}
	if got := tr.Poll(ctx, cs, sn); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("Poll = %v, want %v", got, want)
	}
	res := Result{Layers: want}
	if res.LineRateLayers() != 2 || res.LazyLayers() != 0 {
		t.Errorf("LineRateLayers %d, LazyLayers %d", res.LineRateLayers(), res.LazyLayers())
	}
}
