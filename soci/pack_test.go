package soci

import (
	"bytes"
	"errors"
	"testing"

	"github.com/opencontainers/go-digest"
)

// TestPackZtoc: a packed zTOC unpacks into the zTOC its descriptor names,
// and into nothing else: not another zTOC, not more bytes than the
// descriptor's size (a zstd bomb stops there), not from bytes that are
// not zstd.
func TestPackZtoc(t *testing.T) {
	ztoc := bytes.Repeat([]byte("a zTOC's windows compress as the layer does. "), 20000)
	d := Descriptor{Digest: digest.FromBytes(ztoc), Size: int64(len(ztoc)), Annotations: map[string]string{}}
	packed, err := PackZtoc(ztoc, d.Annotations)
	if err != nil {
		t.Fatal(err)
	}
	pd, psize, ok := Packed(d.Annotations)
	if !ok || pd != digest.FromBytes(packed) || psize != int64(len(packed)) {
		t.Fatalf("annotations %v name %s (%d bytes), want the packed blob %s (%d)", d.Annotations, pd, psize, digest.FromBytes(packed), len(packed))
	}
	if len(packed) >= len(ztoc)/10 {
		t.Fatalf("packed into %d of %d bytes", len(packed), len(ztoc))
	}
	other := append([]byte(nil), ztoc...)
	other[100] ^= 1
	otherPacked, _ := PackZtoc(other, map[string]string{})
	for _, tc := range []struct {
		name   string
		packed []byte
		size   int64
		want   error
	}{
		{name: "the zTOC", packed: packed, size: d.Size},
		{name: "another zTOC", packed: otherPacked, size: d.Size, want: ErrVerify},
		{name: "more than its size", packed: packed, size: d.Size - 1, want: ErrTooLarge},
		{name: "less than its size", packed: packed, size: d.Size + 1, want: ErrVerify},
		{name: "not zstd", packed: ztoc[:1000], size: d.Size, want: ErrFormat},
		{name: "size over the limit", packed: packed, size: MaxZtocSize + 1, want: ErrTooLarge},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := UnpackZtoc(tc.packed, tc.size, d.Digest)
			if tc.want == nil {
				if err != nil || !bytes.Equal(got, ztoc) {
					t.Fatalf("err %v, %d bytes", err, len(got))
				}
				return
			}
			if !errors.Is(err, tc.want) {
				t.Fatalf("err %v, want %v", err, tc.want)
			}
		})
	}
}
