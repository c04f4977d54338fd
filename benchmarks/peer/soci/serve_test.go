package main

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/awslabs/soci-snapshotter/config"
)

// TestMetadataStore: serve opens the metadata store soci's config names,
// as its daemon does, and refuses an unknown one.
func TestMetadataStore(t *testing.T) {
	for _, tc := range []struct {
		name, store string
		file        string // what it creates under root ("" for nothing)
		wantErr     bool
	}{
		{name: "default", store: "", file: "metadata.db"},
		{name: "db", store: "db", file: "metadata.db"},
		{name: "db-multi", store: "db-multi"},
		{name: "unknown", store: "sqlite", wantErr: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			root := t.TempDir()
			cfg := config.NewConfig()
			cfg.MetadataStore = tc.store
			st, closeStore, err := metadataStore(root, cfg)
			if tc.wantErr {
				if err == nil {
					t.Fatal("no error")
				}
				return
			}
			if err != nil || st == nil {
				t.Fatalf("metadataStore = %v, %v", st, err)
			}
			defer closeStore()
			if tc.file != "" {
				if _, err := os.Stat(filepath.Join(root, tc.file)); err != nil {
					t.Error(err)
				}
			}
		})
	}
}
