package fetcher

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"testing"
)

// Seeds: testdata/fuzz/<FuzzName>/ plus the f.Add calls below.

func FuzzParseContentRange(f *testing.F) {
	for _, s := range []string{"bytes 0-99/100", "bytes 5-9/*", "bytes 0-0/1", "bytes 9223372036854775806-9223372036854775807/*", "bytes -1-5/10", "bits 0-1/2"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, v string) {
		r, total, err := parseContentRange(v)
		if err != nil {
			return
		}
		if r.Off < 0 || r.Len <= 0 || r.End() < r.Off || (total != -1 && total < r.End()) {
			t.Fatalf("%q accepted as %+v of %d", v, r, total)
		}
		if again, t2, err := parseContentRange(fmt.Sprintf("bytes %d-%d/%d", r.Off, r.End()-1, max(total, r.End()))); err != nil || again != r || (total != -1 && t2 != total) {
			t.Fatalf("%q does not round-trip: %+v %v", v, again, err)
		}
	})
}

// FuzzReadMultipart feeds arbitrary multipart/byteranges bodies to the
// parser for two requested spans: it must fail cleanly or return exactly
// the requested lengths.
func FuzzReadMultipart(f *testing.F) {
	part := func(off, end int, body string) string {
		return fmt.Sprintf("--B\r\nContent-Type: application/octet-stream\r\nContent-Range: bytes %d-%d/1000\r\n\r\n%s\r\n", off, end, body)
	}
	f.Add([]byte(part(0, 3, "abcd")+part(10, 13, "wxyz")+"--B--\r\n"), int64(0), int64(4), int64(10), int64(4))
	f.Add([]byte(part(0, 13, "abcdefghijklmn")+"--B--\r\n"), int64(0), int64(4), int64(10), int64(4))
	f.Add([]byte(part(0, 3, "ab")+"--B--\r\n"), int64(0), int64(4), int64(10), int64(4))
	f.Fuzz(func(t *testing.T, body []byte, off1, len1, off2, len2 int64) {
		if off1 < 0 || len1 <= 0 || off2 < off1+len1 || len2 <= 0 || off2+len2 > 1000 {
			return
		}
		b := &Blob{f: &Fetcher{cfg: Config{MaxDiscard: 1 << 10}}, size: 1000}
		spans := []Range{{off1, len1}, {off2, len2}}
		resp := &http.Response{StatusCode: 206, Body: io.NopCloser(bytes.NewReader(body))}
		out, err := b.readMultipart(resp, "B", spans)
		if err != nil {
			return
		}
		for i, s := range spans {
			if int64(len(out[i])) != s.Len {
				t.Fatalf("span %d: %d bytes, want %d", i, len(out[i]), s.Len)
			}
		}
	})
}
