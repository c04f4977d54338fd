package fetch

import (
	"os"
	"testing"
)

// FuzzPredictParsers: the readers of what a file says comes next (ELF
// headers, ld.so.cache, .pyc) take any bytes without a panic or a read
// outside them; they run only their seeds in make test.
func FuzzPredictParsers(f *testing.F) {
	for _, p := range []string{"testdata/pyc/mod.cpython-311.pyc", "testdata/pyc/encodings__init__.cpython-311.pyc"} {
		b, err := os.ReadFile(p)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte("\x7fELF\x02\x01\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x03\x00\x3e\x00\x01\x00\x00\x00"))
	f.Add([]byte("glibc-ld.so.cache1.1\x01\x00\x00\x00"))
	f.Fuzz(func(t *testing.T, b []byte) {
		read := func(off, n int64) ([]byte, error) {
			if off < 0 || n < 0 || off+n > int64(len(b)) {
				return nil, errMissing
			}
			return b[off : off+n], nil
		}
		parseELF(read, int64(len(b)))
		parseLDCache(b)
		pycImports(b)
	})
}
