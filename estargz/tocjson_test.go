package estargz

import (
	"bytes"
	"encoding/json"
	"errors"
	"reflect"
	"testing"
)

// decodeAll decodes toc with the streaming decoder into the structs
// encoding/json fills.
func decodeAll(toc []byte) (jsonTOC, error) {
	var j jsonTOC
	v, err := decodeTOCJSON(bytes.NewReader(toc), func(je *jsonEntry, _ int64) error {
		if je == nil {
			j.Entries = append(j.Entries, nil)
			return nil
		}
		c := *je
		j.Entries = append(j.Entries, &c)
		return nil
	})
	j.Version = v
	return j, err
}

// FuzzTOCJSON holds the streaming TOC decoder to encoding/json: on the same
// bytes, the same result, or both fail, or ours fails for one of the
// reasons it is deliberately stricter (errStrict).
func FuzzTOCJSON(f *testing.F) {
	for _, s := range []string{
		`{"version":1,"entries":[{"name":"a","type":"reg","size":3,"offset":5,"chunkDigest":"sha256:x","xattrs":{"user.a":"AAEC"}}]}`,
		`{"version":1,"entries":[null,{"name":"d/","type":"dir","mode":493,"uid":0,"gid":-1,"modtime":"2020-01-01T00:00:00Z"}]}`,
		"{\"version\":1,\"extra\":[1,2.5e3,{\"x\":null}],\"entries\":[{\"name\":\"\\u00e9\\ud83d\\ude00\\ud800x\\xff\"}]}\n",
		`{"entries":[],"version":1}`,
		`{"version":1,"entries":[{"name":"a","name":"b"}]}`,
		`{"version":1,"entries":[{"Name":"a"}]}`,
		`{"version":01}`,
		`{"version":1,"entries":[{"name":"a","type":"reg","size":3,"offset":5,"endOffset":9,"chunkType":"zeros","accesstime":"2020-01-01T00:00:00Z"}],"tarSplitDigest":"sha256:x"}`,
		`{"version":1} x`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, toc []byte) {
		var want jsonTOC
		werr := json.Unmarshal(toc, &want)
		got, gerr := decodeAll(toc)
		switch {
		case werr != nil && gerr != nil:
		case gerr != nil && errors.Is(gerr, errStrict):
		case werr != nil || gerr != nil:
			t.Fatalf("encoding/json: %v; ours: %v", werr, gerr)
		case !reflect.DeepEqual(got.Entries, want.Entries) && !(len(got.Entries) == 0 && len(want.Entries) == 0) || got.Version != want.Version:
			t.Fatalf("encoding/json: %+v; ours: %+v", want, got)
		}
	})
}

func TestDecodeTOCJSONCases(t *testing.T) {
	for _, tc := range []struct {
		name, toc string
		ok        bool
	}{
		{"minimal", `{"version":1,"entries":[]}`, true},
		{"unknown key skipped", `{"version":1,"x":{"y":[true,false,null]},"entries":[{"name":"a","z":1}]}`, true},
		{"duplicate key", `{"version":1,"entries":[{"name":"a","name":"b"}]}`, false},
		{"folded key", `{"version":1,"entries":[{"NAME":"a"}]}`, false},
		{"float", `{"version":1.0}`, false},
		{"trailing garbage", `{"version":1}]`, false},
		{"control character", "{\"version\":1,\"entries\":[{\"name\":\"a\x01\"}]}", false},
		{"truncated", `{"version":1,"entries":[{"name":"a"`, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := decodeAll([]byte(tc.toc))
			if (err == nil) != tc.ok {
				t.Fatalf("%s: %v", tc.toc, err)
			}
		})
	}
}
