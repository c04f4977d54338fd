package lazy

import (
	"bytes"
	"context"
	"errors"
	"io"
	"strings"
	"testing"

	"github.com/lazysnap/lazysnap/internal/testtar"
	"github.com/lazysnap/lazysnap/soci"
)

// TestSociCheckBlob: the complete layer's tar is compared with the zTOC's
// file list, entry by entry; a zTOC that agrees passes, and one that omits
// an entry, lists one the layer lacks, or names or sizes one otherwise
// fails with errZtocMismatch, after reading the whole blob (the verifier
// hashes the same stream).
func TestSociCheckBlob(t *testing.T) {
	blob, _ := testtar.SociLayer(11)
	z, err := soci.Build(bytes.NewReader(blob), soci.BuildOptions{SpanSize: 64 << 10})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name   string
		edit   func(files []soci.File) []soci.File
		reason string // "" when the zTOC agrees
	}{
		{name: "agrees", edit: func(f []soci.File) []soci.File { return f }},
		{name: "an entry omitted", edit: func(f []soci.File) []soci.File { return append(f[:3:3], f[4:]...) }, reason: "at"},
		{name: "an entry too many", edit: func(f []soci.File) []soci.File {
			extra := f[len(f)-1]
			extra.Name, extra.Offset = "etc/ghost", extra.Offset+1<<20
			return append(f, extra)
		}, reason: "etc/ghost"},
		{name: "a name changed", edit: func(f []soci.File) []soci.File { f[5].Name = "usr/lib/renamed"; return f }, reason: "renamed"},
		{name: "a size changed", edit: func(f []soci.File) []soci.File {
			for i := range f {
				if f[i].Name == "etc/conf" {
					f[i].Size++
				}
			}
			return f
		}, reason: "etc/conf"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			edited := *z
			edited.Files = tc.edit(append([]soci.File(nil), z.Files...))
			r := &countingReader{r: bytes.NewReader(blob)}
			err := newSociDecoder(&edited, nil).CheckBlob(context.Background(), r)
			if r.n != int64(len(blob)) {
				t.Errorf("read %d of the blob's %d bytes", r.n, len(blob))
			}
			if tc.reason == "" {
				if err != nil {
					t.Fatalf("CheckBlob: %v", err)
				}
				return
			}
			if !errors.Is(err, errZtocMismatch) || !strings.Contains(err.Error(), tc.reason) {
				t.Fatalf("CheckBlob: %v, want errZtocMismatch naming %q", err, tc.reason)
			}
		})
	}
	t.Run("not gzip", func(t *testing.T) {
		err := newSociDecoder(z, nil).CheckBlob(context.Background(), io.MultiReader(strings.NewReader("not a gzip stream")))
		if !errors.Is(err, errZtocMismatch) {
			t.Fatalf("CheckBlob: %v, want errZtocMismatch", err)
		}
	})
}
