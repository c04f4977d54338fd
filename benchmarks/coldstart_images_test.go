package benchmarks

// The cold-start images: Debian bookworm minbase plus python3 (one layer),
// with a data layer for the hash (one large incompressible file) and the
// walk (many small files) workloads, and minbase plus Debian's
// python3-torch (one layer) for the torch workload; each as the gzip
// original, the plain
// eStargz conversion, and an eStargz conversion per workload with the files
// it opens (recorded with convert/record) first.

import (
	"archive/tar"
	"bytes"
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/lazysnap/lazysnap/convert"
	"github.com/lazysnap/lazysnap/convert/record"
	"github.com/lazysnap/lazysnap/estargz"
	"github.com/lazysnap/lazysnap/internal/testenv/registry"
	"github.com/lazysnap/lazysnap/internal/testimage"
	"github.com/lazysnap/lazysnap/layer"
	"github.com/lazysnap/lazysnap/zstdchunked"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// layoutCacheVersion changes whenever the generated data changes.
const layoutCacheVersion = "v1"

// imageVariant is one pushed image.
type imageVariant struct {
	image, tag string // repository "bench/<image>", tag
	layout     string // OCI layout directory
	ref        string // set by push
	size       int64  // manifest, config and layers
	layers     int
	toc        int64 // TOCs and footers of the eStargz layers
	prefetch   int64 // compressed bytes before the prefetch landmarks
}

// needs are the registry bytes a lazy start of a workload requires.
type needs struct {
	needed       int64 // manifest, config, TOCs and the chunks of the files opened
	withPrefetch int64 // needed plus the prioritized ranges prefetched
}

// imageSet is every image of a benchmark and what the workloads need.
type imageSet struct {
	variants map[string]*imageVariant // by image + ":" + tag
	expect   map[string]string        // workload → its output
	files    map[string][]string      // workload → files it opens, in order
	needs    map[string]needs         // workload + ":" + tag → needs
	gzipTime time.Duration            // building or loading the gzip layouts
	convTime map[string]time.Duration // tag → lazysnap convert time, summed over images
}

// tagFor is the image tag a mode uses for a workload.
func tagFor(cfg benchConfig, w workload, m mode) string {
	switch {
	case m.kind == "overlayfs" || m.lineRate || m.sociSnap == sociParallel || m.soci == sociLearned:
		return "gzip"
	case m.prioritized:
		return "prio-" + w.name
	case m.zstd:
		return "zstd"
	case m.soci == "lazysnap":
		return "soci"
	case m.soci == "soci":
		return "soci-peer"
	}
	return "esgz"
}

func (s *imageSet) variant(cfg benchConfig, w workload, m mode) *imageVariant {
	return s.variants[w.image+":"+tagFor(cfg, w, m)]
}

// buildImages makes (or loads from the cache) the gzip layouts, records the
// workloads' files and converts the eStargz variants the modes need.
func buildImages(t *testing.T, cfg benchConfig) *imageSet {
	t.Helper()
	s := &imageSet{variants: map[string]*imageVariant{}, expect: map[string]string{}, files: map[string][]string{},
		needs: map[string]needs{}, convTime: map[string]time.Duration{}}
	start := time.Now()
	gzipDirs, dataExpect := gzipLayouts(t, cfg)
	s.gzipTime = time.Since(start)
	tmp := t.TempDir()

	// record every workload's files (they also size what a lazy start needs)
	byImage := map[string][]workload{}
	var images []string
	for _, w := range cfg.workloads {
		if _, ok := byImage[w.image]; !ok {
			images = append(images, w.image)
		}
		byImage[w.image] = append(byImage[w.image], w)
	}
	for _, img := range images {
		root := filepath.Join(tmp, "rootfs-"+img)
		if err := record.Unpack(gzipDirs[img], root); err != nil {
			t.Fatal(err)
		}
		for _, w := range byImage[img] {
			var out, errOut bytes.Buffer
			files, err := record.Trace(context.Background(), root, w.argv, record.Options{Stdout: &out, Stderr: &errOut})
			if err != nil {
				t.Fatalf("recording %s: %v\n%s", w.name, err, errOut.String())
			}
			if want, ok := dataExpect[w.name]; ok && out.String() != want {
				t.Fatalf("%s printed %q in the unpacked image, want %q", w.name, out.String(), want)
			}
			s.expect[w.name], s.files[w.name] = out.String(), record.WithRuntimeFiles(root, files)
			t.Logf("recorded %s: %d files, output %q", w.name, len(s.files[w.name]), strings.TrimSpace(out.String()))
		}
		os.RemoveAll(root)
	}

	// the variants the modes need
	add := func(img, tag string, prio []string) {
		key := img + ":" + tag
		if s.variants[key] != nil {
			return
		}
		v := &imageVariant{image: img, tag: tag, layout: gzipDirs[img]}
		if strings.HasPrefix(tag, "soci") {
			v.layout = filepath.Join(tmp, img+"-"+tag)
			s.convTime[tag] += sociVariant(t, gzipDirs[img], v.layout, tag)
		} else if tag != "gzip" {
			v.layout = filepath.Join(tmp, img+"-"+tag)
			start := time.Now()
			opts := convert.Options{Prioritized: prio}
			if tag == "zstd" {
				opts.Format = convert.FormatZstdChunked
			}
			if _, err := convert.Image(context.Background(), gzipDirs[img], v.layout, opts); err != nil {
				t.Fatalf("convert %s: %v", key, err)
			}
			s.convTime[strings.SplitN(tag, "-", 2)[0]] += time.Since(start)
		}
		if err := v.measure(); err != nil {
			t.Fatal(err)
		}
		s.variants[key] = v
	}
	for _, w := range cfg.workloads {
		for _, m := range cfg.modes {
			tag := tagFor(cfg, w, m)
			var prio []string
			if strings.HasPrefix(tag, "prio-") {
				prio = s.files[w.name]
			}
			add(w.image, tag, prio)
			if tag == "gzip" || strings.HasPrefix(tag, "soci") {
				continue
			}
			n, err := neededBytes(s.variants[w.image+":"+tag].layout, s.files[w.name])
			if err != nil {
				t.Fatal(err)
			}
			s.needs[w.name+":"+tag] = n
		}
	}
	return s
}

// baseTar returns the rootfs tar an image is built on: python3's for
// every image but torch, python3-torch's for torch; either given by its
// variable or built once with mkimages.sh.
func baseTar(t *testing.T, cfg benchConfig, image string) string {
	t.Helper()
	variant, given := "python", cfg.pythonTar
	if image == "torch" {
		variant, given = "torch", cfg.torchTar
	}
	if given != "" {
		return given
	}
	dir := rootfsDir()
	if _, err := os.Stat(filepath.Join(dir, "bookworm-"+variant+".tar")); err != nil {
		t.Logf("building the %s rootfs with mkimages.sh (once)", variant)
	}
	start := time.Now()
	cmd := exec.Command("./mkimages.sh", dir, variant)
	cmd.Stderr = os.Stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("mkimages.sh %s: %v", variant, err)
	}
	if d := time.Since(start); d > time.Second {
		t.Logf("built the %s rootfs in %s", variant, d.Round(time.Second))
	}
	lines := strings.Fields(string(out))
	if len(lines) == 0 {
		t.Fatal("mkimages.sh printed no path")
	}
	return lines[len(lines)-1]
}

// gzipLayouts returns the gzip layout of each image the workloads use,
// from the cache or built, and the outputs the data workloads must print.
func gzipLayouts(t *testing.T, cfg benchConfig) (map[string]string, map[string]string) {
	t.Helper()
	dirs := map[string]string{}
	expect := map[string]string{"hello": "hello\n"}
	var baseLayer []byte
	var loaded string // the tar in baseLayer
	for _, w := range cfg.workloads {
		if dirs[w.image] != "" {
			continue
		}
		base := baseTar(t, cfg, w.image)
		fi, err := os.Stat(base)
		if err != nil {
			t.Fatal(err)
		}
		key := fmt.Sprintf("%s-%d-%d-%d-%d", layoutCacheVersion, fi.Size(), fi.ModTime().Unix(), cfg.bigBytes, cfg.smallFiles)
		dir := filepath.Join(cfg.cacheDir, key, w.image)
		dirs[w.image] = dir
		metaPath := filepath.Join(dir, "bench.json")
		var meta map[string]string
		if b, err := os.ReadFile(metaPath); err == nil && json.Unmarshal(b, &meta) == nil {
			for k, v := range meta {
				expect[k] = v
			}
			continue
		}
		if loaded != base {
			baseLayer = nil // one at a time: the torch tar is 1.3 GB
			if baseLayer, err = os.ReadFile(base); err != nil {
				t.Fatal(err)
			}
			loaded = base
		}
		start := time.Now()
		layers := [][]byte{baseLayer}
		meta = map[string]string{}
		switch w.image {
		case "hash":
			l, sum := bigLayer(cfg.bigBytes)
			layers, meta["hash"] = append(layers, l), sum+"\n"
		case "walk":
			l, out := treeLayer(cfg.smallFiles)
			layers, meta["walk"] = append(layers, l), out
		}
		tmp := dir + ".tmp"
		os.RemoveAll(tmp)
		if _, err := testimage.Layout(tmp, "lazysnap.bench/"+w.image+":gzip", layers...); err != nil {
			t.Fatal(err)
		}
		b, _ := json.Marshal(meta)
		if err := os.WriteFile(filepath.Join(tmp, "bench.json"), b, 0o644); err != nil {
			t.Fatal(err)
		}
		os.RemoveAll(dir)
		if err := os.Rename(tmp, dir); err != nil {
			t.Fatal(err)
		}
		for k, v := range meta {
			expect[k] = v
		}
		t.Logf("built the %s gzip layout in %s (cached in %s)", w.image, time.Since(start).Round(time.Second), dir)
	}
	return dirs, expect
}

// dataModTime is the modification time of the generated files (Unix).
const dataModTime = 1700000000

// bigLayer is a layer with data/big: size deterministic random bytes. It
// returns the tar and the file's sha256.
func bigLayer(size int64) ([]byte, string) {
	var b bytes.Buffer
	b.Grow(int(size) + 4096)
	tw := tar.NewWriter(&b)
	tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: "data/", Mode: 0o755, ModTime: time.Unix(dataModTime, 0)})
	tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: "data/big", Mode: 0o644, Size: size, ModTime: time.Unix(dataModTime, 0)})
	h := sha256.New()
	rng := rand.NewChaCha8([32]byte{'b', 'i', 'g'})
	buf := make([]byte, 1<<20)
	for left := size; left > 0; left -= int64(len(buf)) {
		p := buf[:min(left, int64(len(buf)))]
		rng.Read(p)
		h.Write(p)
		tw.Write(p)
	}
	tw.Close()
	return b.Bytes(), hex.EncodeToString(h.Sum(nil))
}

// treeLayer is a layer with n small files (100 to 499 random bytes) in
// directories of 100 under data/tree. It returns the tar and what the walk
// workload prints: the number of files and their total size.
func treeLayer(n int) ([]byte, string) {
	var b bytes.Buffer
	tw := tar.NewWriter(&b)
	dir := func(name string) {
		tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: name, Mode: 0o755, ModTime: time.Unix(dataModTime, 0)})
	}
	dir("data/")
	dir("data/tree/")
	rng := rand.New(rand.NewPCG(100, 0))
	data := rand.NewChaCha8([32]byte{'t', 'r', 'e', 'e'})
	buf := make([]byte, 512)
	var total int64
	for i := range n {
		if i%100 == 0 {
			dir(fmt.Sprintf("data/tree/d%04d/", i/100))
		}
		p := buf[:100+rng.IntN(400)]
		data.Read(p)
		tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: fmt.Sprintf("data/tree/d%04d/f%02d", i/100, i%100),
			Mode: 0o644, Size: int64(len(p)), ModTime: time.Unix(dataModTime, 0)})
		tw.Write(p)
		total += int64(len(p))
	}
	tw.Close()
	return b.Bytes(), fmt.Sprintf("%d %d\n", n, total)
}

// openBlob opens the blob of d in the OCI layout at layout.
func openBlob(layout string, d ocispec.Descriptor) (*os.File, error) {
	p, err := convert.LayoutBlobPath(layout, d)
	if err != nil {
		return nil, err
	}
	return os.Open(p)
}

// readBlob reads the blob of d in the OCI layout at layout.
func readBlob(layout string, d ocispec.Descriptor) ([]byte, error) {
	p, err := convert.LayoutBlobPath(layout, d)
	if err != nil {
		return nil, err
	}
	return os.ReadFile(p)
}

// readManifest reads the first manifest of an OCI layout.
func readManifest(layout string) (ocispec.Descriptor, ocispec.Manifest, error) {
	var idx ocispec.Index
	var m ocispec.Manifest
	b, err := os.ReadFile(filepath.Join(layout, "index.json"))
	if err == nil {
		err = json.Unmarshal(b, &idx)
	}
	if err == nil && len(idx.Manifests) == 0 {
		err = fmt.Errorf("%s: empty index", layout)
	}
	if err != nil {
		return ocispec.Descriptor{}, m, err
	}
	md := idx.Manifests[0]
	if md.MediaType == ocispec.MediaTypeImageIndex { // a SOCI-indexed image: its image manifest
		if md, err = imageOfIndex(layout, md); err != nil {
			return md, m, err
		}
	}
	if b, err = readBlob(layout, md); err == nil {
		err = json.Unmarshal(b, &m)
	}
	return md, m, err
}

// measure fills in the variant's sizes.
func (v *imageVariant) measure() error {
	md, m, err := readManifest(v.layout)
	if err != nil {
		return err
	}
	v.size, v.layers = md.Size+m.Config.Size, len(m.Layers)
	for _, l := range m.Layers {
		v.size += l.Size
		_, esgz := l.Annotations[estargz.TOCJSONDigestAnnotation]
		if _, zc, _ := zstdchunked.ManifestDigest(l.Annotations); !esgz && !zc {
			continue
		}
		toc, err := layerTOC(v.layout, l)
		if err != nil {
			return err
		}
		v.toc += l.Size - toc.Offset
		v.prefetch += toc.PrefetchEnd
	}
	return nil
}

// layerTOC reads the TOC of an eStargz or zstd:chunked layer (verified
// against its annotation) with its chunks' ends; its Offset is where the
// layer's data ends.
func layerTOC(layout string, l ocispec.Descriptor) (*estargz.TOC, error) {
	f, err := openBlob(layout, l)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	sr := io.NewSectionReader(f, 0, l.Size)
	if d, ok, _ := zstdchunked.ManifestDigest(l.Annotations); ok {
		c := &tocCollector{}
		info, _, err := zstdchunked.DecodeTOC(sr, c, zstdchunked.Options{Digest: d})
		if err != nil {
			return nil, fmt.Errorf("layer %s: %w", l.Digest, err)
		}
		c.toc.Offset, c.toc.PrefetchEnd = info.Offset, info.PrefetchEnd
		return &c.toc, nil
	}
	r, err := estargz.Open(sr, estargz.WithoutTOCVerification())
	if err != nil {
		return nil, fmt.Errorf("layer %s: %w", l.Digest, err)
	}
	return r.TOC(), nil
}

// tocCollector keeps the entries an eStargz-shaped TOC decoder gives.
type tocCollector struct {
	toc    estargz.TOC
	chunks []*estargz.Chunk
}

func (c *tocCollector) Entry(id, parent, link int, base string, e *estargz.Entry) error {
	v := *e
	v.Chunks = slices.Clone(e.Chunks)
	if id < len(c.toc.Entries) {
		c.toc.Entries[id] = v
		return nil
	}
	c.toc.Entries = append(c.toc.Entries, v)
	return nil
}

func (c *tocCollector) ChunkEnd(i int, end int64) {
	if i == 0 {
		for j := range c.toc.Entries {
			for k := range c.toc.Entries[j].Chunks {
				c.chunks = append(c.chunks, &c.toc.Entries[j].Chunks[k])
			}
		}
	}
	c.chunks[i].End = end
}

// neededBytes computes what a lazy start of a workload that opens files
// must fetch from an eStargz layout: the manifest and config, every layer's
// TOC and footer, and the chunks of the opened files (in the topmost layer
// that has each); and that plus the prefetched (prioritized) ranges.
func neededBytes(layout string, files []string) (needs, error) {
	md, m, err := readManifest(layout)
	if err != nil {
		return needs{}, err
	}
	n := needs{needed: md.Size + m.Config.Size}
	n.withPrefetch = n.needed
	claimed := map[string]bool{}
	for i := len(m.Layers) - 1; i >= 0; i-- {
		l := m.Layers[i]
		toc, err := layerTOC(layout, l)
		if err != nil {
			return needs{}, err
		}
		entries := map[string]*estargz.Entry{}
		for j := range toc.Entries {
			e := &toc.Entries[j]
			entries[e.Name] = e
		}
		spans := [][2]int64{{toc.Offset, l.Size}}
		for _, name := range files {
			e := entries[name]
			if e == nil || claimed[name] {
				continue
			}
			claimed[name] = true
			if e.Type == layer.TypeHardlink {
				if e = entries[e.LinkName]; e == nil {
					continue
				}
			}
			for _, c := range e.Chunks {
				spans = append(spans, [2]int64{c.Offset, c.End})
			}
		}
		n.needed += unionLen(spans)
		if pe := toc.PrefetchEnd; pe > 0 {
			spans = append(spans, [2]int64{0, pe})
		}
		n.withPrefetch += unionLen(spans)
	}
	return n, nil
}

// unionLen is the length of the union of half-open spans.
func unionLen(spans [][2]int64) int64 {
	slices.SortFunc(spans, func(a, b [2]int64) int { return cmp.Compare(a[0], b[0]) })
	var total, end int64 = 0, -1
	for _, s := range spans {
		if s[0] > end {
			total += s[1] - s[0]
			end = s[1]
		} else if s[1] > end {
			total += s[1] - end
			end = s[1]
		}
	}
	return total
}

// push uploads every variant to the registry, blobs streamed from disk.
func (s *imageSet) push(t *testing.T, reg *registry.Registry) {
	t.Helper()
	ctx := context.Background()
	p := reg.Pusher()
	start := time.Now()
	for _, v := range s.variants {
		repo := "bench/" + v.image
		md, m, err := readManifest(v.layout)
		if err != nil {
			t.Fatal(err)
		}
		for _, d := range append([]ocispec.Descriptor{m.Config}, m.Layers...) {
			f, err := openBlob(v.layout, d)
			if err != nil {
				t.Fatal(err)
			}
			err = p.PushBlobReader(ctx, repo, f, d.Size, d.Digest)
			f.Close()
			if err != nil {
				t.Fatalf("push %s: %v", v.tag, err)
			}
		}
		mb, err := readBlob(v.layout, md)
		if err != nil {
			t.Fatal(err)
		}
		tag := v.tag
		if root := rootOf(t, v.layout); root.MediaType == ocispec.MediaTypeImageIndex {
			pushSociParts(t, p, repo, v.layout, root)
			tag = md.Digest.String() // the image index goes under the tag
		}
		if _, err := p.PushManifest(ctx, repo, tag, md.MediaType, mb); err != nil {
			t.Fatal(err)
		}
		if tag != v.tag {
			ib, err := readBlob(v.layout, rootOf(t, v.layout))
			if err != nil {
				t.Fatal(err)
			}
			if _, err := p.PushManifest(ctx, repo, v.tag, ocispec.MediaTypeImageIndex, ib); err != nil {
				t.Fatal(err)
			}
		}
		v.ref = reg.Ref(repo, v.tag)
	}
	t.Logf("pushed %d images in %s", len(s.variants), time.Since(start).Round(time.Second))
}
