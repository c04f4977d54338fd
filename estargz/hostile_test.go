package estargz_test

import (
	"archive/tar"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/klauspost/compress/gzip"
	"github.com/lazysnap/lazysnap/estargz"
	"github.com/opencontainers/go-digest"
)

// gz compresses b as one gzip member.
func gz(b []byte) []byte {
	var out bytes.Buffer
	zw := gzip.NewWriter(&out)
	zw.Write(b)
	zw.Close()
	return out.Bytes()
}

// tocMember wraps TOC JSON in a tar entry named name, in one gzip member.
func tocMember(name string, tocJSON []byte, declared int64) []byte {
	var tb bytes.Buffer
	tw := tar.NewWriter(&tb)
	tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: name, Size: declared, Mode: 0o644})
	tw.Write(tocJSON)
	tw.Flush()
	return gz(tb.Bytes())
}

// blobWith builds a blob whose data section holds the given members (their
// offsets are returned) followed by a TOC holding tocJSON and a footer.
func blobWith(tocJSON []byte, members ...[]byte) (blob []byte, offsets []int64, tocOff int64) {
	var b bytes.Buffer
	b.Write(gz([]byte("header member")))
	for _, m := range members {
		offsets = append(offsets, int64(b.Len()))
		b.Write(m)
	}
	tocOff = int64(b.Len())
	b.Write(tocMember(estargz.TOCTarName, tocJSON, int64(len(tocJSON))))
	b.Write(estargz.Footer(tocOff))
	return b.Bytes(), offsets, tocOff
}

type ent map[string]any

// tocOf renders entries; the string "$N" in an offset field is replaced by
// the offset of data member N.
func tocOf(entries ...ent) []byte {
	b, _ := json.Marshal(map[string]any{"version": 1, "entries": entries})
	return b
}

func TestHostileTOC(t *testing.T) {
	data := []byte("hello, world")
	member := gz(data)
	dg := digest.FromBytes(data).String()
	// the member sits at the offset of the first data member; compute it
	_, offs, _ := blobWith(nil, member)
	off := offs[0]
	reg := func(name string) ent {
		return ent{"name": name, "type": "reg", "size": len(data), "offset": off, "chunkDigest": dg}
	}
	for _, tc := range []struct {
		name  string
		toc   []byte
		wants error
	}{
		{"valid", tocOf(reg("a")), nil},
		{"absolute name", tocOf(reg("/etc/shadow")), estargz.ErrFormat},
		{"dotdot name", tocOf(reg("../../etc/shadow")), estargz.ErrFormat},
		{"dotdot inside", tocOf(reg("a/../../b")), estargz.ErrFormat},
		{"NUL in name", tocOf(reg("a\x00b")), estargz.ErrFormat},
		{"duplicate", tocOf(reg("a"), ent{"name": "a", "type": "dir"}), estargz.ErrFormat},
		{"duplicate dir", tocOf(ent{"name": "d/", "type": "dir"}, ent{"name": "d", "type": "dir"}), estargz.ErrFormat},
		{"unknown type", tocOf(ent{"name": "a", "type": "socket"}), estargz.ErrFormat},
		{"version 2", []byte(`{"version":2,"entries":[]}`), estargz.ErrFormat},
		{"not JSON", []byte(`{"version":1,"entries":[`), estargz.ErrFormat},
		{"null entry", []byte(`{"version":1,"entries":[null]}`), estargz.ErrFormat},
		{"orphan chunk", tocOf(ent{"name": "a", "type": "chunk", "offset": off, "chunkDigest": dg, "chunkSize": 3}), estargz.ErrFormat},
		{"chunk gap", tocOf(
			ent{"name": "a", "type": "reg", "size": 24, "offset": off, "chunkDigest": dg, "chunkSize": 12},
			ent{"name": "a", "type": "chunk", "offset": off + 1, "chunkOffset": 13, "chunkDigest": dg}), estargz.ErrFormat},
		{"chunks short of size", tocOf(ent{"name": "a", "type": "reg", "size": 24, "offset": off, "chunkDigest": dg, "chunkSize": 12}), estargz.ErrFormat},
		{"chunk of another file", tocOf(
			ent{"name": "a", "type": "reg", "size": 24, "offset": off, "chunkDigest": dg, "chunkSize": 12},
			ent{"name": "b", "type": "chunk", "offset": off + 1, "chunkOffset": 12, "chunkDigest": dg}), estargz.ErrFormat},
		{"chunk larger than file", tocOf(ent{"name": "a", "type": "reg", "size": 5, "offset": off, "chunkDigest": dg, "chunkSize": 12}), estargz.ErrFormat},
		{"overlapping chunks", tocOf(reg("a"), reg("b")), estargz.ErrFormat},
		{"overlapping inner", tocOf(reg("a"), ent{"name": "b", "type": "reg", "size": 12, "offset": off, "innerOffset": 5, "chunkDigest": dg}), estargz.ErrFormat},
		{"offset past TOC", tocOf(ent{"name": "a", "type": "reg", "size": 12, "offset": 1 << 40, "chunkDigest": dg}), estargz.ErrFormat},
		{"negative offset", tocOf(ent{"name": "a", "type": "reg", "size": 12, "offset": -5, "chunkDigest": dg}), estargz.ErrFormat},
		{"huge inner offset", tocOf(ent{"name": "a", "type": "reg", "size": 12, "offset": off, "innerOffset": 1 << 40, "chunkDigest": dg}), estargz.ErrTooLarge},
		{"huge chunk", tocOf(ent{"name": "a", "type": "reg", "size": 1 << 40, "offset": off, "chunkDigest": dg}), estargz.ErrTooLarge},
		{"missing chunk digest", tocOf(ent{"name": "a", "type": "reg", "size": 12, "offset": off}), estargz.ErrFormat},
		{"md5 chunk digest", tocOf(ent{"name": "a", "type": "reg", "size": 12, "offset": off, "chunkDigest": "md5:0123"}), estargz.ErrFormat},
		{"negative size", tocOf(ent{"name": "a", "type": "reg", "size": -1}), estargz.ErrFormat},
		{"negative mode", tocOf(ent{"name": "a", "type": "dir", "mode": -1}), estargz.ErrFormat},
		{"largest uid and gid", tocOf(ent{"name": "a", "type": "dir", "uid": 1<<32 - 1, "gid": 1<<32 - 1}), nil},
		{"uid above 32 bits", tocOf(ent{"name": "a", "type": "dir", "uid": 1 << 32}), estargz.ErrFormat},
		{"gid above 32 bits", tocOf(ent{"name": "a", "type": "dir", "gid": 1<<32 + 7}), estargz.ErrFormat},
		{"uid far above 32 bits", tocOf(ent{"name": "a", "type": "reg", "uid": 1 << 62}), estargz.ErrFormat},
		{"bad modtime", tocOf(ent{"name": "a", "type": "dir", "modtime": "yesterday"}), estargz.ErrFormat},
		{"dangling hardlink", tocOf(ent{"name": "a", "type": "hardlink", "linkName": "nope"}), estargz.ErrFormat},
		{"hardlink escape", tocOf(ent{"name": "a", "type": "hardlink", "linkName": "../../etc/shadow"}), estargz.ErrFormat},
		{"hardlink to dir", tocOf(ent{"name": "d", "type": "dir"}, ent{"name": "a", "type": "hardlink", "linkName": "d"}), estargz.ErrFormat},
		{"hardlink to itself", tocOf(ent{"name": "a", "type": "hardlink", "linkName": "a"}), estargz.ErrFormat},
		{"parent is a file", tocOf(reg("a"), ent{"name": "a/b", "type": "dir"}), estargz.ErrFormat},
		{"root is a file", tocOf(ent{"name": "./", "type": "reg"}), estargz.ErrFormat},
	} {
		t.Run(tc.name, func(t *testing.T) {
			blob, _, _ := blobWith(tc.toc, member)
			_, err := estargz.Open(sectionOf(blob), estargz.WithoutTOCVerification())
			if tc.wants == nil && err != nil {
				t.Fatalf("Open: %v", err)
			}
			if !errors.Is(err, tc.wants) {
				t.Fatalf("Open error %v, want %v", err, tc.wants)
			}
		})
	}
}

func TestHostileBlob(t *testing.T) {
	data := []byte("hello, world")
	good := tocOf(ent{"name": "a", "type": "reg", "size": len(data), "offset": 31, "chunkDigest": digest.FromBytes(data).String()})
	goodBlob, _, tocOff := blobWith(good, gz(data))
	withFooter := func(off int64) []byte {
		b := bytes.Clone(goodBlob[:len(goodBlob)-estargz.FooterSize])
		return append(b, estargz.Footer(off)...)
	}
	replaceTOC := func(member []byte) []byte {
		b := bytes.Clone(goodBlob[:tocOff])
		b = append(b, member...)
		return append(b, estargz.Footer(tocOff)...)
	}
	big := []byte(fmt.Sprintf(`{"version":1,"entries":[],"pad":"%s"}`, strings.Repeat("x", 4096)))
	for _, tc := range []struct {
		name  string
		blob  []byte
		opts  []estargz.OpenOption
		wants error
	}{
		{"empty", nil, nil, estargz.ErrFormat},
		{"footer only garbage", bytes.Repeat([]byte{0x1f}, 60), nil, estargz.ErrFormat},
		{"footer past end", withFooter(1 << 40), nil, estargz.ErrFormat},
		{"footer at footer", withFooter(int64(len(goodBlob) - estargz.FooterSize)), nil, estargz.ErrFormat},
		{"footer into data", withFooter(3), nil, estargz.ErrFormat},
		{"TOC not gzip", replaceTOC([]byte("plain text, not gzip at all")), nil, estargz.ErrFormat},
		{"TOC wrong tar name", replaceTOC(tocMember("other.json", good, int64(len(good)))), nil, estargz.ErrFormat},
		{"TOC truncated", replaceTOC(tocMember(estargz.TOCTarName, good, int64(len(good))+100)), nil, estargz.ErrFormat},
		{"TOC over cap", replaceTOC(tocMember(estargz.TOCTarName, big, int64(len(big)))), []estargz.OpenOption{estargz.WithMaxTOCSize(1024), estargz.WithoutTOCVerification()}, estargz.ErrTooLarge},
		{"TOC bomb", replaceTOC(tocMember(estargz.TOCTarName, nil, 1<<40)), nil, estargz.ErrTooLarge},
		{"TOC digest mismatch", goodBlob, []estargz.OpenOption{estargz.WithTOCDigest(digest.FromString("other"))}, estargz.ErrVerify},
		{"bad TOC digest", goodBlob, []estargz.OpenOption{estargz.WithTOCDigest("sha256:zz")}, estargz.ErrFormat},
		{"no verification choice", goodBlob, []estargz.OpenOption{}, estargz.ErrNoTOCDigest},
	} {
		t.Run(tc.name, func(t *testing.T) {
			opts := tc.opts
			if opts == nil {
				opts = []estargz.OpenOption{estargz.WithoutTOCVerification()}
			}
			_, err := estargz.Open(sectionOf(tc.blob), opts...)
			if !errors.Is(err, tc.wants) {
				t.Fatalf("Open error %v, want %v", err, tc.wants)
			}
		})
	}
}

func TestCorruptChunkIsNeverServed(t *testing.T) {
	data := []byte("the right bytes")
	wrong := []byte("the wrong bytes")
	for _, tc := range []struct {
		name   string
		member []byte
		wants  error
	}{
		{"right", gz(data), nil},
		{"wrong content", gz(wrong), estargz.ErrVerify},
		{"short content", gz(data[:5]), estargz.ErrFormat},
		{"not gzip", []byte("garbage garbage garbage"), estargz.ErrFormat},
	} {
		t.Run(tc.name, func(t *testing.T) {
			toc := tocOf(ent{"name": "f", "type": "reg", "size": len(data), "offset": len(gz([]byte("header member"))), "chunkDigest": digest.FromBytes(data).String()})
			blob, _, _ := blobWith(toc, tc.member)
			r, err := estargz.Open(sectionOf(blob), estargz.WithTOCDigest(digest.FromBytes(toc)))
			if err != nil {
				t.Fatal(err)
			}
			f, err := r.OpenFile("f")
			if err != nil {
				t.Fatal(err)
			}
			buf := make([]byte, len(data))
			n, err := f.ReadAt(buf, 0)
			if !errors.Is(err, tc.wants) {
				t.Fatalf("ReadAt error %v, want %v", err, tc.wants)
			}
			if tc.wants != nil && n != 0 {
				t.Fatalf("ReadAt returned %d bytes of an unverified chunk", n)
			}
			if tc.wants == nil && !bytes.Equal(buf, data) {
				t.Fatalf("ReadAt = %q", buf)
			}
		})
	}
}
