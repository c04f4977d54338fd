package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/lazysnap/lazysnap/internal/testimage"
	"github.com/lazysnap/lazysnap/internal/testtar"
)

func TestRun(t *testing.T) {
	tmp := t.TempDir()
	src := filepath.Join(tmp, "src")
	if _, err := testimage.Layout(src, "example.com/x:1", testtar.Synthetic(1<<20)); err != nil {
		t.Fatal(err)
	}
	prio := filepath.Join(tmp, "prio")
	os.WriteFile(prio, []byte("# comment\netc/hostname\n\n"), 0o644)
	for _, tc := range []struct {
		name   string
		args   []string
		code   int
		stdout string
		stderr string
		env    map[string]string
	}{
		{name: "no args", args: nil, code: 2, stderr: "usage:"},
		{name: "help", args: []string{"help"}, code: 0, stderr: "commands:"},
		{name: "unknown", args: []string{"frobnicate"}, code: 2, stderr: `unknown command "frobnicate"`},
		{name: "version", args: []string{"version"}, code: 0, stdout: "lazysnap dev"},
		{name: "status without serve", args: []string{"status", "--address", filepath.Join(tmp, "none.sock")}, code: 1, stderr: "is lazysnap serve running?"},
		{name: "pull without containerd", args: []string{"pull", "--address", filepath.Join(tmp, "none.sock"), "example.com/x:1"}, code: 1, stderr: "none.sock does not exist: is containerd running?"},
		{name: "pull takes CONTAINERD_ADDRESS", args: []string{"pull", "example.com/x:1"}, env: map[string]string{"CONTAINERD_ADDRESS": filepath.Join(tmp, "env.sock")}, code: 1, stderr: "env.sock does not exist"},
		{name: "pull --address over CONTAINERD_ADDRESS", args: []string{"pull", "--address", filepath.Join(tmp, "flag.sock"), "example.com/x:1"}, env: map[string]string{"CONTAINERD_ADDRESS": filepath.Join(tmp, "env.sock")}, code: 1, stderr: "flag.sock does not exist"},
		{name: "pull help says what is lazy", args: []string{"pull", "-h"}, code: 0, stderr: "eStargz and\nzstd:chunked layers, and gzip layers with a SOCI index, lazily"},
		{name: "convert bad platform", args: []string{"convert", "--platform", "linux/amd64/v3/x", src, filepath.Join(tmp, "p")}, code: 2, stderr: "platform"},
		{name: "index absent platform", args: []string{"index", "--platform", "windows/amd64", src, filepath.Join(tmp, "q")}, code: 1, stderr: "has no manifest for windows/amd64"},
		{name: "serve help", args: []string{"serve", "-h"}, code: 0, stderr: "Runs the snapshotter daemon"},
		{name: "serve help names the config", args: []string{"serve", "-h"}, code: 0, stderr: `(default "/etc/lazysnap/config.toml")`},
		{name: "fuse-manager help", args: []string{"fuse-manager", "-h"}, code: 0, stderr: "Serves the FUSE mounts"},
		{name: "serve missing config", args: []string{"serve", "--config", filepath.Join(tmp, "none.toml")}, code: 1, stderr: "none.toml: no such file"},
		{name: "serve argument", args: []string{"serve", "x"}, code: 2, stderr: "no arguments expected"},
		{name: "convert one arg", args: []string{"convert", src}, code: 2, stderr: "want SRC and DST"},
		{name: "convert bad flag", args: []string{"convert", "-level", "x", src, "y"}, code: 2, stderr: "invalid value"},
		{name: "convert missing src", args: []string{"convert", filepath.Join(tmp, "nope"), filepath.Join(tmp, "o")}, code: 1, stderr: "invalid OCI image layout"},
		{name: "convert", args: []string{"convert", "-prioritized-files", prio, src, filepath.Join(tmp, "out.tar")}, code: 0, stdout: "converted 1 of 1 layers in 1 manifests"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for k, v := range tc.env {
				t.Setenv(k, v)
			}
			var stdout, stderr bytes.Buffer
			code := run(tc.args, &stdout, &stderr)
			if code != tc.code || !strings.Contains(stdout.String(), tc.stdout) || !strings.Contains(stderr.String(), tc.stderr) {
				t.Fatalf("exit %d, want %d\nstdout: %s\nstderr: %s", code, tc.code, stdout.String(), stderr.String())
			}
		})
	}
	if fi, err := os.Stat(filepath.Join(tmp, "out.tar")); err != nil || fi.Size() == 0 {
		t.Fatalf("convert wrote no archive: %v", err)
	}
}
