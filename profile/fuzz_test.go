package profile

import (
	"testing"
)

func FuzzParse(f *testing.F) {
	good, _ := Marshal(sample())
	f.Add(good)
	f.Add([]byte(`{"version":1,"ref":"r","layers":[]}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		p, err := Parse(b)
		if err != nil {
			return
		}
		again, err := Marshal(p)
		if err != nil {
			t.Fatalf("Marshal of a parsed profile: %v", err)
		}
		if _, err := Parse(again); err != nil {
			t.Fatalf("re-Parse: %v", err)
		}
		for _, l := range p.Layers {
			l.ChunkList()
		}
	})
}

func FuzzParseIndex(f *testing.F) {
	f.Add([]byte(`{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","artifactType":"` + MediaType + `","digest":"` + dgA.String() + `","size":10}]}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		idx, err := ParseIndex(b)
		if err != nil {
			return
		}
		for _, d := range idx.Manifests {
			if d.Digest.Validate() != nil || d.Size < 0 {
				t.Fatalf("accepted descriptor %+v", d)
			}
		}
	})
}

func FuzzParseArtifact(f *testing.F) {
	f.Add([]byte(`{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","artifactType":"` + MediaType + `","config":{"mediaType":"application/vnd.oci.empty.v1+json","digest":"sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a","size":2},"layers":[{"mediaType":"` + MediaType + `","digest":"` + blobA.String() + `","size":100}],"subject":{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"` + dgA.String() + `","size":500}}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		l, err := ParseArtifact(b, dgA)
		if err != nil {
			return
		}
		if l.MediaType != MediaType || l.Size > MaxBytes || l.Size < 0 {
			t.Fatalf("accepted layer %+v", l)
		}
	})
}
