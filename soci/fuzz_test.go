package soci_test

import (
	"archive/tar"
	"bytes"
	"encoding/json"
	"testing"

	"github.com/lazysnap/lazysnap/soci"
	"github.com/opencontainers/go-digest"
)

func smallZtoc(t testing.TB) []byte {
	blob := makeLayer(t, []testFile{{name: "a/", typ: tar.TypeDir}, {name: "a/b", typ: tar.TypeReg, data: []byte("hello")},
		{name: "a/c", typ: tar.TypeSymlink, link: "b"}, {name: "x/attr", typ: tar.TypeReg, data: []byte("attr")}})
	z, err := soci.Build(bytes.NewReader(blob), soci.BuildOptions{SpanSize: 1})
	if err != nil {
		t.Fatal(err)
	}
	return soci.Marshal(z)
}

// FuzzUnmarshal: no input panics the zTOC parser, none makes it allocate
// more than DecodeBound of its size (the seeds in testdata/fuzz include
// zTOCs whose entries share records), and what it accepts is valid and
// survives a round trip.
func FuzzUnmarshal(f *testing.F) {
	good := smallZtoc(f)
	f.Add(good)
	f.Add(good[:len(good)/2])
	f.Add([]byte{})
	f.Add(make([]byte, 64))
	bad := bytes.Clone(good)
	bad[4] ^= 0xff
	f.Add(bad)
	f.Fuzz(func(t *testing.T, b []byte) {
		var z *soci.Ztoc
		var err error
		got := allocated(func() { z, err = soci.Unmarshal(b, 1000) })
		withinBound(t, b, got)
		if err != nil {
			return
		}
		if err := z.Validate(); err != nil {
			t.Fatalf("accepted an invalid zTOC: %v", err)
		}
		if _, err := soci.Unmarshal(soci.Marshal(z), 1000); err != nil {
			t.Fatalf("re-marshalled zTOC rejected: %v", err)
		}
	})
}

// FuzzParseCheckpoints: no input panics the checkpoint blob parser, and
// what it accepts is written back byte for byte.
func FuzzParseCheckpoints(f *testing.F) {
	z, err := soci.Unmarshal(smallZtoc(f), 0)
	if err != nil {
		f.Fatal(err)
	}
	b := z.Checkpoints.Marshal()
	f.Add(b)
	v1 := z.Checkpoints
	v1.V1 = true
	f.Add(v1.Marshal())
	f.Add(b[:12])
	f.Add([]byte{1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0})
	f.Add([]byte{0xff, 0xff, 0xff, 0x7f, 1, 0, 0, 0, 0, 0, 0, 0})
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := soci.ParseCheckpoints(b)
		if err != nil {
			return
		}
		if !bytes.Equal(c.Marshal(), b) {
			t.Fatal("accepted blob not written back the same")
		}
	})
}

// FuzzParseIndexManifest: no input panics the index manifest parser, and
// every zTOC it accepts names a layer.
func FuzzParseIndexManifest(f *testing.F) {
	m := soci.NewIndexManifest([]soci.Descriptor{soci.ZtocDescriptor([]byte("ztoc"), soci.Descriptor{MediaType: "application/vnd.oci.image.layer.v1.tar+gzip", Digest: "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a"}, 1<<22)}, "t")
	b, _ := json.Marshal(m)
	f.Add(b)
	f.Add([]byte(`{"schemaVersion":2,"config":{"mediaType":"application/vnd.amazon.soci.index.v1+json"},"layers":[{"digest":"x"}]}`))
	f.Add([]byte(`{}`))
	f.Add([]byte(`null`))
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := soci.ParseIndexManifest(b)
		if err != nil {
			return
		}
		for _, l := range m.Layers {
			if l.MediaType == soci.PrefetchMediaType {
				continue
			}
			if _, err := m.Ztoc(digestOf(t, l.Annotations[soci.AnnotationLayerDigest])); err != nil {
				t.Fatalf("accepted zTOC of layer %q not found: %v", l.Annotations[soci.AnnotationLayerDigest], err)
			}
		}
	})
}

func digestOf(t *testing.T, s string) digest.Digest {
	d, err := digest.Parse(s)
	if err != nil {
		t.Fatal(err)
	}
	return d
}
