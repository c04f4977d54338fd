package fetch

import (
	"os"
	"reflect"
	"testing"
)

// TestPycImports reads the imports of module bodies from .pyc files
// compiled by CPython 3.11 (testdata/pyc: mod.py.txt's, and Debian
// bookworm's encodings/__init__), not those of functions and classes;
// truncated and foreign files are errors, never a panic.
func TestPycImports(t *testing.T) {
	for _, tc := range []struct {
		name, file string
		want       []pyImport
	}{
		{name: "every form of import", file: "mod.cpython-311.pyc", want: []pyImport{
			{name: "os"}, {name: "sys"}, {name: "a.b.c"},
			{name: "", from: []string{"sibling"}}, {name: "sub", from: []string{"thing"}}, {name: "json", from: []string{"decoder"}},
		}},
		{name: "Debian's encodings package", file: "encodings__init__.cpython-311.pyc", want: []pyImport{
			{name: "codecs"}, {name: "sys"}, {name: "", from: []string{"aliases"}},
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b, err := os.ReadFile("testdata/pyc/" + tc.file)
			if err != nil {
				t.Fatal(err)
			}
			got, err := pycImports(b)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("imports %+v, want %+v", got, tc.want)
			}
			for n := range len(b) {
				if _, err := pycImports(b[:n]); err == nil && n < len(b)-1 {
					t.Errorf("%d of %d bytes read without an error", n, len(b))
					break
				}
			}
		})
	}
	if _, err := pycImports([]byte("\x7fELF not a pyc at all....")); err == nil {
		t.Error("an ELF file read as a pyc")
	}
}
