package soci

import (
	"fmt"
	"path"
	"slices"
	"strings"
	"time"

	"github.com/google/flatbuffers/go"
	"github.com/lazysnap/lazysnap/layer"
	"github.com/lazysnap/lazysnap/soci/internal/fb"
	"github.com/opencontainers/go-digest"
)

// Version is the zTOC version lazysnap writes and reads ("0.9", the only
// one SOCI defines).
const Version = "0.9"

// Algorithms of a zTOC's layer. Only gzip layers are read lazily.
const (
	AlgorithmGzip         = "gzip"
	AlgorithmUncompressed = "uncompressed"
)

// Limits applied by Unmarshal (a zTOC is registry data).
const (
	// MaxZtocSize caps a serialized zTOC.
	MaxZtocSize = 256 << 20
	// MaxSpanBytes caps one span, compressed and uncompressed: a chunk of
	// the index is a span's range.
	MaxSpanBytes = 64 << 20
	// DefaultMaxFiles caps a zTOC's entries unless Limits say otherwise.
	DefaultMaxFiles = 1 << 20
	// nameMax caps an entry's name and link name.
	nameMax = 4096
)

// Ztoc is the table of contents of one layer: its files, where their
// bytes lie in the uncompressed tar stream, and the spans and checkpoints
// from which a span's bytes are inflated alone.
type Ztoc struct {
	Version          string
	BuildTool        string
	CompressedSize   int64 // the layer blob's size
	UncompressedSize int64 // the tar stream's size
	Files            []File
	Algorithm        string
	// SpanDigests are the sha256 of each span's compressed bytes
	// (SpanRange).
	SpanDigests []digest.Digest
	// Checkpoints, one per span: where the span starts and the inflater's
	// state there.
	Checkpoints Checkpoints
}

// File is one tar entry of the layer.
type File struct {
	Name     string // as in the tar (Clean gives the clean name)
	Type     string // layer.TypeReg, layer.TypeDir, ... (SOCI's names are layer's)
	Offset   int64  // of the content in the tar stream
	Size     int64
	Linkname string
	Mode     int64 // tar mode: permission, setuid/setgid/sticky bits
	UID, GID uint32
	Uname    string
	Gname    string
	ModTime  time.Time
	DevMajor int64
	DevMinor int64
	// PAX are the entry's PAX records (xattrs are SCHILY.xattr.NAME).
	PAX map[string]string
}

// SpanRange returns span i's compressed range [start, end) in the blob:
// from the byte holding its checkpoint's first bits to the next
// checkpoint's first full byte (the blob's end for the last span).
func (z *Ztoc) SpanRange(i int) (start, end int64) {
	cp := &z.Checkpoints.List[i]
	start = cp.In
	if cp.Bits != 0 {
		start--
	}
	end = z.CompressedSize
	if i+1 < len(z.Checkpoints.List) {
		end = z.Checkpoints.List[i+1].In
	}
	return start, end
}

// SpanOut returns span i's uncompressed range [start, end) in the tar
// stream.
func (z *Ztoc) SpanOut(i int) (start, end int64) {
	start = z.Checkpoints.List[i].Out
	end = max(z.UncompressedSize, start) // a last checkpoint may lie in the padding after the tar's end
	if i+1 < len(z.Checkpoints.List) {
		end = z.Checkpoints.List[i+1].Out
	}
	return start, end
}

// SpanAt returns the span holding uncompressed offset off.
func (z *Ztoc) SpanAt(off int64) int {
	l := z.Checkpoints.List
	i, _ := slices.BinarySearchFunc(l, off, func(c Checkpoint, off int64) int {
		if c.Out <= off {
			return -1
		}
		return 1
	})
	return max(i-1, 0)
}

// Validate checks what a reader relies on: sizes, spans and checkpoints in
// order and in range, entries of known types with clean names whose
// contents lie in the tar stream in tar order.
func (z *Ztoc) Validate() error {
	if z.Version != Version {
		return fmt.Errorf("%w: zTOC version %q (lazysnap reads %s)", ErrUnsupported, z.Version, Version)
	}
	if z.Algorithm != AlgorithmGzip {
		return fmt.Errorf("%w: %s layer", ErrUnsupported, z.Algorithm)
	}
	if z.CompressedSize <= 0 || z.UncompressedSize < 0 {
		return fmt.Errorf("%w: sizes %d compressed, %d uncompressed", ErrInvalid, z.CompressedSize, z.UncompressedSize)
	}
	cps := z.Checkpoints.List
	if len(cps) == 0 || len(cps) != len(z.SpanDigests) {
		return fmt.Errorf("%w: %d checkpoints for %d spans", ErrInvalid, len(cps), len(z.SpanDigests))
	}
	if cps[0].Out != 0 {
		return fmt.Errorf("%w: first checkpoint at uncompressed offset %d", ErrInvalid, cps[0].Out)
	}
	for i := range cps {
		c := &cps[i]
		if c.Bits > 7 || c.In < 1 || c.In > z.CompressedSize || c.Out < 0 {
			return fmt.Errorf("%w: checkpoint %d (in %d, bits %d, out %d) outside the layer", ErrInvalid, i, c.In, c.Bits, c.Out)
		}
		if i > 0 && (c.In <= cps[i-1].In || c.Out <= cps[i-1].Out) {
			return fmt.Errorf("%w: checkpoint %d not after checkpoint %d", ErrInvalid, i, i-1)
		}
		s, e := z.SpanRange(i)
		os, oe := z.SpanOut(i)
		if e-s > MaxSpanBytes || oe-os > MaxSpanBytes || e < s {
			return fmt.Errorf("%w: span %d of %d compressed, %d uncompressed bytes (at most %d)", ErrInvalid, i, e-s, oe-os, MaxSpanBytes)
		}
	}
	var next int64 // where the next entry's header may start
	for i := range z.Files {
		f := &z.Files[i]
		if err := checkName(f.Name); err != nil {
			return err
		}
		if len(f.Linkname) > nameMax || strings.IndexByte(f.Linkname, 0) >= 0 {
			return fmt.Errorf("%w: entry %q: link name of %d bytes", ErrInvalid, f.Name, len(f.Linkname))
		}
		switch f.Type {
		case layer.TypeReg:
		case layer.TypeDir, layer.TypeSymlink, layer.TypeHardlink, layer.TypeChar, layer.TypeBlock, layer.TypeFifo:
			if f.Size != 0 {
				return fmt.Errorf("%w: %s %q of size %d", ErrInvalid, f.Type, f.Name, f.Size)
			}
		default:
			return fmt.Errorf("%w: entry %q of type %q", ErrInvalid, f.Name, f.Type)
		}
		if f.Type == layer.TypeHardlink {
			if err := checkName(f.Linkname); err != nil {
				return fmt.Errorf("hardlink %q: %w", f.Name, err)
			}
		}
		// the content follows the entry's tar header, which follows the
		// previous entry's content padded to a tar block
		if f.Offset < next+tarBlock || f.Size < 0 || f.Offset > z.UncompressedSize || f.Size > z.UncompressedSize-f.Offset {
			return fmt.Errorf("%w: entry %q at %d+%d: not after the previous entry and a tar header, or past the tar stream (%d bytes)", ErrInvalid, f.Name, f.Offset, f.Size, z.UncompressedSize)
		}
		next = (f.Offset + f.Size + tarBlock - 1) &^ (tarBlock - 1)
	}
	return nil
}

// Clean returns the clean relative name of a tar entry ("" for the root):
// leading "./" and "/" are dropped; names with ".." elements, NUL bytes or
// longer than 4096 bytes are errors wrapping ErrInvalid.
func Clean(name string) (string, error) {
	if err := checkName(name); err != nil {
		return "", err
	}
	c := path.Clean("/" + name)
	return strings.TrimPrefix(c, "/"), nil
}

// checkName is Clean's check, without allocating.
func checkName(name string) error {
	if len(name) > nameMax || strings.IndexByte(name, 0) >= 0 {
		return fmt.Errorf("%w: name %q", ErrInvalid, name)
	}
	for rest := name; rest != ""; {
		var el string
		el, rest, _ = strings.Cut(rest, "/")
		if el == ".." {
			return fmt.Errorf("%w: name %q has a .. element", ErrInvalid, name)
		}
	}
	return nil
}

// Marshal serializes z in SOCI's FlatBuffers layout.
func Marshal(z *Ztoc) []byte {
	bl := flatbuffers.NewBuilder(1024 + len(z.Checkpoints.List)*PackedCheckpointSize + len(z.Files)*128)
	version, tool := bl.CreateString(z.Version), bl.CreateString(z.BuildTool)
	metas := make([]flatbuffers.UOffsetT, len(z.Files))
	for i := range z.Files {
		metas[i] = marshalFile(bl, &z.Files[i])
	}
	fb.TOCStartMetadataVector(bl, len(metas))
	mv := endOffsets(bl, metas)
	fb.TOCStart(bl)
	fb.TOCAddMetadata(bl, mv)
	toc := fb.TOCEnd(bl)

	cpv := bl.CreateByteVector(z.Checkpoints.Marshal())
	sds := make([]flatbuffers.UOffsetT, len(z.SpanDigests))
	for i, d := range z.SpanDigests {
		sds[i] = bl.CreateString(d.String())
	}
	fb.CompressionInfoStartSpanDigestsVector(bl, len(sds))
	sdv := endOffsets(bl, sds)
	fb.CompressionInfoStart(bl)
	fb.CompressionInfoAddMaxSpanId(bl, int32(len(z.SpanDigests)-1))
	fb.CompressionInfoAddSpanDigests(bl, sdv)
	fb.CompressionInfoAddCheckpoints(bl, cpv)
	alg := fb.CompressionAlgorithmGzip
	if z.Algorithm == AlgorithmUncompressed {
		alg = fb.CompressionAlgorithmUncompressed
	}
	fb.CompressionInfoAddCompressionAlgorithm(bl, alg)
	ci := fb.CompressionInfoEnd(bl)

	fb.ZtocStart(bl)
	fb.ZtocAddVersion(bl, version)
	fb.ZtocAddBuildToolIdentifier(bl, tool)
	fb.ZtocAddToc(bl, toc)
	fb.ZtocAddCompressedArchiveSize(bl, z.CompressedSize)
	fb.ZtocAddUncompressedArchiveSize(bl, z.UncompressedSize)
	fb.ZtocAddCompressionInfo(bl, ci)
	bl.Finish(fb.ZtocEnd(bl))
	return bl.FinishedBytes()
}

func marshalFile(bl *flatbuffers.Builder, f *File) flatbuffers.UOffsetT {
	name, typ, link := bl.CreateString(f.Name), bl.CreateString(f.Type), bl.CreateString(f.Linkname)
	uname, gname := bl.CreateString(f.Uname), bl.CreateString(f.Gname)
	mt, _ := f.ModTime.MarshalText()
	modTime := bl.CreateString(string(mt))
	keys := make([]string, 0, len(f.PAX))
	for k := range f.PAX {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	xs := make([]flatbuffers.UOffsetT, len(keys))
	for i, k := range keys {
		ko, vo := bl.CreateString(k), bl.CreateString(f.PAX[k])
		fb.XattrStart(bl)
		fb.XattrAddKey(bl, ko)
		fb.XattrAddValue(bl, vo)
		xs[i] = fb.XattrEnd(bl)
	}
	fb.FileMetadataStartXattrsVector(bl, len(xs))
	xv := endOffsets(bl, xs)
	fb.FileMetadataStart(bl)
	fb.FileMetadataAddName(bl, name)
	fb.FileMetadataAddType(bl, typ)
	fb.FileMetadataAddUncompressedOffset(bl, f.Offset)
	fb.FileMetadataAddUncompressedSize(bl, f.Size)
	fb.FileMetadataAddLinkname(bl, link)
	fb.FileMetadataAddMode(bl, f.Mode)
	fb.FileMetadataAddUid(bl, f.UID)
	fb.FileMetadataAddGid(bl, f.GID)
	fb.FileMetadataAddUname(bl, uname)
	fb.FileMetadataAddGname(bl, gname)
	fb.FileMetadataAddModTime(bl, modTime)
	fb.FileMetadataAddDevmajor(bl, f.DevMajor)
	fb.FileMetadataAddDevminor(bl, f.DevMinor)
	fb.FileMetadataAddXattrs(bl, xv)
	return fb.FileMetadataEnd(bl)
}

// endOffsets prepends offs to the vector just started (FlatBuffers builds
// back to front, so the last first) and ends it.
func endOffsets(bl *flatbuffers.Builder, offs []flatbuffers.UOffsetT) flatbuffers.UOffsetT {
	for i := len(offs) - 1; i >= 0; i-- {
		bl.PrependUOffsetT(offs[i])
	}
	return bl.EndVector(len(offs))
}
