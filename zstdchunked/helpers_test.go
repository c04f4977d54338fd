package zstdchunked_test

import (
	"archive/tar"
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/klauspost/compress/zstd"
	"github.com/lazysnap/lazysnap/estargz"
	"github.com/lazysnap/lazysnap/internal/testtar"
	"github.com/lazysnap/lazysnap/layer"
	"github.com/lazysnap/lazysnap/zstdchunked"
	"github.com/opencontainers/go-digest"
)

// collector is a TOCSink that keeps every entry by ID.
type collector struct {
	entries []estargz.Entry
	chunks  []*estargz.Chunk
}

func (c *collector) Entry(id, parent, link int, base string, e *estargz.Entry) error {
	v := *e
	v.Chunks = append([]estargz.Chunk(nil), e.Chunks...)
	if id < len(c.entries) {
		c.entries[id] = v
		return nil
	}
	c.entries = append(c.entries, v)
	return nil
}

func (c *collector) ChunkEnd(i int, end int64) {
	if i == 0 {
		for j := range c.entries {
			for k := range c.entries[j].Chunks {
				c.chunks = append(c.chunks, &c.entries[j].Chunks[k])
			}
		}
	}
	c.chunks[i].End = end
}

func sectionOf(b []byte) *io.SectionReader {
	return io.NewSectionReader(bytes.NewReader(b), 0, int64(len(b)))
}

// decode decodes blob's TOC, verified against d.
func decode(blob []byte, d digest.Digest) (*collector, zstdchunked.Footer, error) {
	c := &collector{}
	_, f, err := zstdchunked.DecodeTOC(sectionOf(blob), c, zstdchunked.Options{Digest: d})
	return c, f, err
}

// checkContents reads every regular file of the TOC from blob, each chunk
// from its [Offset, End) range alone, and compares the result with the
// source tar's entries.
func checkContents(t *testing.T, blob []byte, c *collector, src map[string]*testtar.Entry) {
	t.Helper()
	var dec zstdchunked.Decoder
	byName := map[string]*estargz.Entry{}
	for i := range c.entries {
		byName[c.entries[i].Name] = &c.entries[i]
	}
	files := 0
	defer func() {
		if files == 0 {
			t.Error("no file compared")
		}
	}()
	for _, name := range testtar.Names(src) {
		s := src[name]
		e := byName[name]
		if e == nil {
			if !strings.HasPrefix(name, ".") {
				t.Errorf("%q missing", name)
			}
			continue
		}
		if s.Header.Typeflag != tar.TypeReg {
			continue
		}
		if e.Type != layer.TypeReg || e.Size != int64(len(s.Content)) {
			t.Errorf("%q: %s of %d bytes, want reg of %d", name, e.Type, e.Size, len(s.Content))
			continue
		}
		var got []byte
		for i := range e.Chunks {
			ch := &e.Chunks[i]
			if ch.End <= ch.Offset || ch.End > int64(len(blob)) {
				t.Fatalf("%q chunk %d: range [%d, %d) in a %d-byte blob", name, i, ch.Offset, ch.End, len(blob))
			}
			b, err := dec.Decode(nil, ch, blob[ch.Offset:ch.End])
			if err != nil {
				t.Fatalf("%q chunk %d: %v", name, i, err)
			}
			got = append(got, b...)
		}
		if !bytes.Equal(got, s.Content) {
			t.Errorf("%q: content differs", name)
		}
		files++
	}
}

// convert writes tarball as zstd:chunked with our writer.
func convert(t testing.TB, tarball []byte, opts ...estargz.ConvertOption) ([]byte, *estargz.Result) {
	t.Helper()
	var out bytes.Buffer
	res, err := zstdchunked.Convert(context.Background(), &out, sectionOf(tarball), zstdchunked.DefaultLevel, opts...)
	if err != nil {
		t.Fatalf("Convert: %v", err)
	}
	return out.Bytes(), res
}

// csEntry is a TOC entry as containers-storage writes it.
type csEntry struct {
	Type        string            `json:"type"`
	Name        string            `json:"name"`
	Linkname    string            `json:"linkName,omitempty"`
	Mode        int64             `json:"mode,omitempty"`
	Size        int64             `json:"size,omitempty"`
	UID         int               `json:"uid,omitempty"`
	GID         int               `json:"gid,omitempty"`
	ModTime     *time.Time        `json:"modtime,omitempty"`
	AccessTime  *time.Time        `json:"accesstime,omitempty"`
	Devmajor    int64             `json:"devMajor,omitempty"`
	Devminor    int64             `json:"devMinor,omitempty"`
	Xattrs      map[string]string `json:"xattrs,omitempty"`
	Digest      string            `json:"digest,omitempty"`
	Offset      int64             `json:"offset,omitempty"`
	EndOffset   int64             `json:"endOffset,omitempty"`
	ChunkSize   int64             `json:"chunkSize,omitempty"`
	ChunkOffset int64             `json:"chunkOffset,omitempty"`
	ChunkDigest string            `json:"chunkDigest,omitempty"`
	ChunkType   string            `json:"chunkType,omitempty"`
}

var csTypes = map[byte]string{tar.TypeReg: "reg", tar.TypeLink: "hardlink", tar.TypeChar: "char",
	tar.TypeBlock: "block", tar.TypeDir: "dir", tar.TypeFifo: "fifo", tar.TypeSymlink: "symlink"}

// containersBlob writes tarball the way containers-storage's compressor
// lays zstd:chunked out (from the format's description, not its code):
// tar headers in shared frames, each chunk of a file's content in a frame
// of its own (chunks of chunkSize bytes; an all-zero one is a "zeros"
// chunk), files in one chunk with only offset, endOffset and digest, the
// TOC and a tar-split (here opaque bytes) as skippable frames, and the
// current footer, or the legacy one (no tar-split) if legacy. It returns
// the blob and the layer's annotations.
func containersBlob(t testing.TB, tarball []byte, chunkSize int, legacy bool) ([]byte, map[string]string) {
	t.Helper()
	enc, err := zstd.NewWriter(nil)
	if err != nil {
		t.Fatal(err)
	}
	defer enc.Close()
	var out, frame bytes.Buffer
	flush := func() {
		if frame.Len() > 0 {
			out.Write(enc.EncodeAll(frame.Bytes(), nil))
			frame.Reset()
		}
	}
	tw := tar.NewWriter(&frame)
	tr := tar.NewReader(bytes.NewReader(tarball))
	var toc []csEntry
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		content, err := io.ReadAll(tr)
		if err != nil {
			t.Fatal(err)
		}
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		e := csEntry{Type: csTypes[h.Typeflag], Name: h.Name, Linkname: h.Linkname, Mode: h.Mode, Size: h.Size,
			UID: h.Uid, GID: h.Gid, Devmajor: h.Devmajor, Devminor: h.Devminor}
		if h.Typeflag == tar.TypeRegA {
			e.Type = "reg"
		}
		if !h.ModTime.IsZero() {
			mt := h.ModTime
			e.ModTime, e.AccessTime = &mt, &mt
		}
		for k, v := range testtar.Xattrs(h) {
			if e.Xattrs == nil {
				e.Xattrs = map[string]string{}
			}
			e.Xattrs[k] = base64.StdEncoding.EncodeToString([]byte(v))
		}
		if len(content) == 0 {
			toc = append(toc, e)
			continue
		}
		e.Digest = digest.SHA256.FromBytes(content).String()
		var chunks []csEntry
		for off := 0; off < len(content); off += chunkSize {
			part := content[off:min(off+chunkSize, len(content))]
			flush()
			c := csEntry{Type: "chunk", Name: h.Name, Offset: int64(out.Len()), ChunkOffset: int64(off),
				ChunkSize: int64(len(part)), ChunkDigest: digest.SHA256.FromBytes(part).String()}
			if bytes.Count(part, []byte{0}) == len(part) {
				c.ChunkType = "zeros"
			}
			if _, err := tw.Write(part); err != nil {
				t.Fatal(err)
			}
			flush()
			chunks = append(chunks, c)
		}
		e.Offset, e.EndOffset = chunks[0].Offset, int64(out.Len())
		if len(chunks) > 1 {
			e.ChunkSize, e.ChunkDigest, e.ChunkType = chunks[0].ChunkSize, chunks[0].ChunkDigest, chunks[0].ChunkType
			toc = append(append(toc, e), chunks[1:]...)
		} else {
			toc = append(toc, e)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	flush()
	tarSplit := enc.EncodeAll([]byte(`{"type":2,"payload":"opaque"}`), nil)
	doc := map[string]any{"version": 1, "entries": toc}
	if !legacy {
		doc["tarSplitDigest"] = digest.SHA256.FromBytes(tarSplit).String()
	}
	js, err := json.Marshal(doc)
	if err != nil {
		t.Fatal(err)
	}
	ztoc := enc.EncodeAll(js, nil)
	f := zstdchunked.Footer{Offset: int64(out.Len()) + 8, Size: int64(len(ztoc)), RawSize: int64(len(js)), Legacy: legacy}
	blob := zstdchunked.AppendSkippable(out.Bytes(), ztoc)
	pos := zstdchunked.Position{Offset: f.Offset, Size: f.Size, RawSize: f.RawSize}.String()
	ann := map[string]string{zstdchunked.ManifestChecksumAnnotation: digest.SHA256.FromBytes(ztoc).String(), zstdchunked.ManifestPositionAnnotation: pos}
	if legacy {
		ann = map[string]string{zstdchunked.LegacyManifestChecksumAnnotation: digest.SHA256.FromBytes(ztoc).String(), zstdchunked.LegacyManifestPositionAnnotation: pos}
	} else {
		f.TarSplitOffset, f.TarSplitSize, f.TarSplitRawSize = int64(len(blob))+8, int64(len(tarSplit)), 29
		blob = zstdchunked.AppendSkippable(blob, tarSplit)
	}
	return f.Append(blob), ann
}
