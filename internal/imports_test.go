package internal_test

import (
	"go/parser"
	"go/token"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

const module = "github.com/lazysnap/lazysnap/"

// allowedImports are the lazysnap packages each package's non-test code may
// import (README.md, Layout). cmd/lazysnap may import any but benchmarks
// and the test helpers; nothing imports benchmarks.
func allowedImports() map[string][]string {
	return map[string][]string{
		"layer":               {},
		"estargz":             {"layer"},
		"index":               {"layer"},
		"zstdchunked":         {"estargz", "layer"},
		"fetcher":             {"internal/descriptor"},
		"credprovider":        {},
		"config":              {"fetcher", "internal/logging", "internal/tomlconfig"},
		"cri":                 {"fetcher"},
		"fs":                  {"fs/fetch", "index"},
		"fs/fetch":            {"index", "layer"},
		"snapshotter":         {"internal/descriptor"},
		"profile":             {"fetcher"},
		"remote":              {"estargz", "index", "layer", "fetcher", "fs", "fs/fetch", "profile", "snapshotter", "soci", "soci/lazy", "unpack", "zstdchunked"},
		"soci":                {"layer", "soci/internal/fb", "zran"},
		"soci/lazy":           {"layer", "soci", "zran"},
		"unpack":              {"soci", "zran"},
		"soci/internal/fb":    {},
		"ops":                 {"fetcher", "fs/fetch", "remote", "snapshotter"},
		"fusemanager":         {"fetcher", "internal/sockets", "ops", "remote", "snapshotter"},
		"pull":                {"ops", "snapshotter"},
		"convert":             {"estargz", "internal/descriptor", "layer", "soci", "zstdchunked"},
		"convert/record":      {"convert"},
		"internal/descriptor": {},
		"internal/logging":    {},
		"internal/logfile":    {},
		"internal/tomlconfig": {},
		"internal/sockets":    {},
		"zran":                {},
	}
}

// TestImportRules: no package imports a lazysnap package its row of the
// layout does not list, and every non-test package has a row.
func TestImportRules(t *testing.T) {
	root, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	allowed := allowedImports()
	seen := map[string]bool{}
	err = filepath.WalkDir(root, func(path string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && (strings.HasPrefix(d.Name(), ".") || d.Name() == "testdata" || path == filepath.Join(root, "benchmarks", "peer")) {
			return filepath.SkipDir
		}
		if d.IsDir() || !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
			return nil
		}
		rel, _ := filepath.Rel(root, filepath.Dir(path))
		rel = filepath.ToSlash(rel)
		if strings.HasPrefix(rel, "internal/test") {
			return nil // test helpers: any imports, and only tests import them
		}
		f, err := parser.ParseFile(token.NewFileSet(), path, nil, parser.ImportsOnly)
		if err != nil {
			return err
		}
		seen[rel] = true
		for _, im := range f.Imports {
			p := strings.Trim(im.Path.Value, `"`)
			if !strings.HasPrefix(p, module) {
				continue
			}
			dep := strings.TrimPrefix(p, module)
			switch {
			case strings.HasPrefix(dep, "benchmarks") && !strings.HasPrefix(rel, "benchmarks"):
				t.Errorf("%s imports %s: nothing but benchmarks imports benchmarks", path, dep)
			case strings.HasPrefix(dep, "internal/test"):
				t.Errorf("%s imports the test helper %s", path, dep)
			case rel == "cmd/lazysnap" || strings.HasPrefix(rel, "benchmarks"):
			default:
				ok, known := allowed[rel]
				if known && !slices.Contains(ok, dep) {
					t.Errorf("%s imports %s; %s may import only %v (README.md, Layout)", path, dep, rel, ok)
				}
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for p := range seen {
		if _, ok := allowed[p]; !ok && p != "cmd/lazysnap" && !strings.HasPrefix(p, "benchmarks") {
			t.Errorf("package %s has no import rule: add it to allowed and to README.md's layout", p)
		}
	}
}

// TestFormatBoundary: the packages that mount layers build from layer's
// neutral types and import no format package, and layer imports nothing
// of ours: the rows of allowedImports may not say otherwise.
func TestFormatBoundary(t *testing.T) {
	formats := []string{"estargz", "zstdchunked", "soci", "soci/lazy", "zran"}
	allowed := allowedImports()
	for _, tc := range []struct {
		pkg    string
		denied []string
	}{
		{"layer", nil}, // nothing at all
		{"index", formats},
		{"fs", formats},
		{"fs/fetch", formats},
	} {
		t.Run(tc.pkg, func(t *testing.T) {
			ok := allowed[tc.pkg]
			if tc.denied == nil && len(ok) > 0 {
				t.Errorf("%s may import %v: it must import nothing of ours", tc.pkg, ok)
			}
			for _, d := range tc.denied {
				if slices.Contains(ok, d) {
					t.Errorf("%s may import the format package %s", tc.pkg, d)
				}
			}
		})
	}
}
