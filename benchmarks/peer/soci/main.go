// Command soci-peer is a test-only oracle built from awslabs/soci-snapshotter
// v0.16.1's own library (its soci and ztoc packages, cgo with zlib), in a
// module of its own so that its dependencies stay out of lazysnap's:
//
//	soci-peer convert LAYOUT [SPAN]  give the image of an OCI layout SOCI v2
//	                                  indexes exactly as `soci convert` does
//	                                  (every layer indexed: minimum size 0)
//	soci-peer build BLOB SPAN OUT     build the zTOC of a gzip tar layer with
//	                                  soci's ztoc.Builder and write it to OUT
//	soci-peer ls ZTOC                 list a zTOC's entries, one JSON object
//	                                  a line, as soci's ztoc package reads them
//	soci-peer extract ZTOC BLOB       extract every regular file with soci's
//	                                  ztoc package: a JSON object a line with
//	                                  its name and the sha256 of its bytes
//	soci-peer serve [--address SOCK] [--root DIR] [--config TOML] [--log-level L]
//	                                  run soci-snapshotter itself (its service,
//	                                  fs and snapshot packages) as a containerd
//	                                  proxy snapshotter on SOCK, configured by
//	                                  soci's own TOML format (serve.go)
//
// Build: cd benchmarks/peer/soci && go build -o soci-peer . (needs
// Debian's zlib1g-dev: soci links libz.a).
package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"

	"github.com/awslabs/soci-snapshotter/soci"
	"github.com/awslabs/soci-snapshotter/soci/store"
	"github.com/awslabs/soci-snapshotter/ztoc"
	"github.com/containerd/containerd/v2/core/images"
	"github.com/containerd/containerd/v2/plugins/content/local"
	"github.com/containerd/platforms"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "soci-peer:", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	if len(args) > 0 && args[0] == "serve" {
		return serve(args[1:])
	}
	if len(args) < 2 {
		return fmt.Errorf("usage: soci-peer convert LAYOUT [SPAN] | build BLOB SPAN OUT | ls ZTOC | extract ZTOC BLOB | serve [FLAGS]")
	}
	switch args[0] {
	case "convert":
		span := int64(4 << 20)
		if len(args) > 2 {
			n, err := strconv.ParseInt(args[2], 10, 64)
			if err != nil {
				return err
			}
			span = n
		}
		return convert(args[1], span)
	case "build":
		if len(args) != 4 {
			return fmt.Errorf("build BLOB SPAN OUT")
		}
		span, err := strconv.ParseInt(args[2], 10, 64)
		if err != nil {
			return err
		}
		z, err := ztoc.NewBuilder("soci-peer").BuildZtoc(args[1], span)
		if err != nil {
			return err
		}
		r, _, err := ztoc.Marshal(z)
		if err != nil {
			return err
		}
		b, err := io.ReadAll(r)
		if err != nil {
			return err
		}
		return os.WriteFile(args[3], b, 0o644)
	case "ls":
		z, err := readZtoc(args[1])
		if err != nil {
			return err
		}
		enc := json.NewEncoder(os.Stdout)
		for _, f := range z.FileMetadata {
			enc.Encode(map[string]any{"name": f.Name, "type": f.Type, "offset": f.UncompressedOffset, "size": f.UncompressedSize,
				"linkname": f.Linkname, "mode": f.Mode, "uid": f.UID, "gid": f.GID, "modtime": f.ModTime.UnixNano(),
				"xattrs": f.Xattrs(), "spans": z.MaxSpanID + 1, "version": z.Version, "compressed": z.CompressedArchiveSize})
		}
		return nil
	case "extract":
		if len(args) != 3 {
			return fmt.Errorf("extract ZTOC BLOB")
		}
		z, err := readZtoc(args[1])
		if err != nil {
			return err
		}
		blob, err := os.Open(args[2])
		if err != nil {
			return err
		}
		defer blob.Close()
		st, err := blob.Stat()
		if err != nil {
			return err
		}
		enc := json.NewEncoder(os.Stdout)
		for _, f := range z.FileMetadata {
			if f.Type != "reg" {
				continue
			}
			b, err := z.ExtractFile(io.NewSectionReader(blob, 0, st.Size()), f.Name)
			if err != nil {
				return fmt.Errorf("extract %s: %w", f.Name, err)
			}
			sum := sha256.Sum256(b)
			enc.Encode(map[string]any{"name": f.Name, "size": len(b), "sha256": hex.EncodeToString(sum[:])})
		}
		return nil
	}
	return fmt.Errorf("unknown command %q", args[0])
}

func readZtoc(path string) (*ztoc.Ztoc, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return ztoc.Unmarshal(f)
}

// convert runs soci's IndexBuilder.Convert over the layout: the layout's
// blobs are containerd's local content store; what soci writes goes to a
// scratch OCI store and is then copied into the layout, whose index.json
// entry is pointed at the converted image index.
func convert(dir string, span int64) error {
	ctx := context.Background()
	var idx ocispec.Index
	b, err := os.ReadFile(filepath.Join(dir, "index.json"))
	if err != nil {
		return err
	}
	if err := json.Unmarshal(b, &idx); err != nil || len(idx.Manifests) != 1 {
		return fmt.Errorf("index.json: want one entry (%v)", err)
	}
	cs, err := local.NewStore(dir)
	if err != nil {
		return err
	}
	scratch, err := os.MkdirTemp("", "soci-peer-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(scratch)
	bs, err := store.NewSociStore(filepath.Join(scratch, "store"))
	if err != nil {
		return err
	}
	db, err := soci.NewDB(filepath.Join(scratch, "artifacts.db"))
	if err != nil {
		return err
	}
	builder, err := soci.NewIndexBuilder(cs, bs, soci.WithArtifactsDb(db), soci.WithSpanSize(span), soci.WithMinLayerSize(0))
	if err != nil {
		return err
	}
	entry := idx.Manifests[0]
	target := entry
	target.Annotations = nil
	out, err := builder.Convert(ctx, images.Image{Name: "peer", Target: target},
		soci.ConvertWithPlatforms(platforms.DefaultSpec()), soci.ConvertWithNoGarbageCollectionLabels())
	if err != nil {
		return err
	}
	// soci's scratch store holds the zTOCs, the SOCI index, the annotated
	// manifest and the image index: copy them into the layout
	src := filepath.Join(scratch, "store", "blobs")
	err = filepath.Walk(src, func(p string, fi os.FileInfo, err error) error {
		if err != nil || fi.IsDir() {
			return err
		}
		rel, _ := filepath.Rel(src, p)
		to := filepath.Join(dir, "blobs", rel)
		if _, err := os.Stat(to); err == nil {
			return nil
		}
		data, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		if err := os.MkdirAll(filepath.Dir(to), 0o755); err != nil {
			return err
		}
		return os.WriteFile(to, data, 0o644)
	})
	if err != nil {
		return err
	}
	nd := *out
	nd.Annotations = entry.Annotations
	idx.Manifests[0] = nd
	nb, err := json.Marshal(&idx)
	if err != nil {
		return err
	}
	// a new file renamed over index.json: never written through a link
	tmp := filepath.Join(dir, ".index.json.tmp")
	if err := os.WriteFile(tmp, nb, 0o644); err != nil {
		return err
	}
	if err := os.Rename(tmp, filepath.Join(dir, "index.json")); err != nil {
		return err
	}
	fmt.Println(out.Digest)
	return nil
}
