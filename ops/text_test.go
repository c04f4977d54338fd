package ops

import "testing"

func TestFormatHelpers(t *testing.T) {
	for n, want := range map[int64]string{0: "0 B", 1023: "1023 B", 1024: "1.0 KiB", 1536: "1.5 KiB",
		5 << 20: "5.0 MiB", 3 << 30: "3.0 GiB", 2 << 40: "2.0 TiB", 5000 << 40: "5000.0 TiB"} {
		if got := HumanBytes(n); got != want {
			t.Errorf("HumanBytes(%d) = %q, want %q", n, got, want)
		}
	}
	for in, want := range map[string]string{hexDigest('f'): "sha256:ffffffffffff", "sha256:abc": "sha256:abc", "": "", "nodigest": "nodigest"} {
		if got := ShortDigest(in); got != want {
			t.Errorf("ShortDigest(%q) = %q, want %q", in, got, want)
		}
	}
	if got := nonZero(map[string]int64{"b": 2, "a": 1, "z": 0}); got != "a 1, b 2" {
		t.Errorf("nonZero = %q", got)
	}
}
