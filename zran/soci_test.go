package zran

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"os"
	"strconv"
	"testing"
)

// TestSOCIConvention: the checkpoints match, field by field, those that
// zlib's inflate(Z_BLOCK) gives under SOCI zinfo's rules, recorded in
// testdata/*.zinfo.json by testdata/zinfo_oracle.py (system zlib via ctypes):
//
//	python3 testdata/zinfo_oracle.py testdata/pigz.gz 0 20000 > testdata/pigz.zinfo.json
func TestSOCIConvention(t *testing.T) {
	for _, name := range []string{"pigz", "mixed"} {
		t.Run(name, func(t *testing.T) {
			blob, err := os.ReadFile("testdata/" + name + ".gz")
			if err != nil {
				t.Fatal(err)
			}
			golden, err := os.ReadFile("testdata/" + name + ".zinfo.json")
			if err != nil {
				t.Fatal(err)
			}
			var want map[string][][4]any
			if err := json.Unmarshal(golden, &want); err != nil {
				t.Fatal(err)
			}
			for spanText, cps := range want {
				span, _ := strconv.ParseInt(spanText, 10, 64)
				_, x, err := index(blob, span, false)
				if err != nil {
					t.Fatal(err)
				}
				got := x.Checkpoints()
				if len(got) != len(cps) {
					t.Errorf("span %d: %d checkpoints, zlib %d", span, len(got), len(cps))
				}
				for i := range min(len(got), len(cps)) {
					g, w := got[i], cps[i]
					sum := sha256.Sum256(g.Window)
					if float64(g.In) != w[0] || float64(g.Bits) != w[1] || float64(g.Out) != w[2] || hex.EncodeToString(sum[:]) != w[3] {
						t.Errorf("span %d checkpoint %d: in %d bits %d out %d window %x; zlib %v", span, i, g.In, g.Bits, g.Out, sum[:4], w)
					}
				}
			}
		})
	}
}
