#!/usr/bin/env bash
# Builds nerdctl, a test-only tool, from the Go module proxy for the
# containerd 2 transfer-service test (TestTransferServiceContainerd2):
#
#   scripts/nerdctl.sh [DIR]     # default /var/tmp/lazysnap-tools; writes DIR/nerdctl
#
# `go install github.com/containerd/nerdctl/v2/cmd/nerdctl@VERSION` refuses
# the module (its go.mod has a replace directive, for its test framework
# mod/tigron, a nested module the module zip leaves out), so the module's
# source is built as the main module instead, with an empty stand-in for
# mod/tigron (cmd/nerdctl does not import it) and moby/moby/v2 at the newest
# version the proxy serves (v2.0.0-beta.28, which v2.4.2 names, is not
# served). NERDCTL_VERSION picks the release. Does nothing if DIR/nerdctl
# is already that version.
set -euo pipefail
version=${NERDCTL_VERSION:-v2.4.2}
moby=${NERDCTL_MOBY:-v2.0.0-beta.25}
dir=${1:-/var/tmp/lazysnap-tools}
export PATH=$PATH:/usr/local/go/bin

if [ -x "$dir/nerdctl" ] && "$dir/nerdctl" --version | grep -q " ${version#v}\$"; then
	echo "nerdctl $version already in $dir"
	exit 0
fi
mkdir -p "$dir"
src=$(mktemp -d)
trap 'chmod -R u+w "$src"; rm -rf "$src"' EXIT
(cd "$src" && go mod download -json "github.com/containerd/nerdctl/v2@$version" >mod.json)
zip=$(sed -n 's/^[[:space:]]*"Zip": "\(.*\)",$/\1/p' "$src/mod.json")
(cd "$src" && unzip -q "$zip" && mv "github.com/containerd/nerdctl/v2@$version" nerdctl && chmod -R u+w nerdctl)
cd "$src/nerdctl"
mkdir -p mod/tigron
printf 'module github.com/containerd/nerdctl/mod/tigron\n\ngo 1.24\n' >mod/tigron/go.mod
go mod edit -replace "github.com/moby/moby/v2=github.com/moby/moby/v2@$moby"
start=$(date +%s)
GOFLAGS=-mod=mod go build -trimpath -ldflags "-X github.com/containerd/nerdctl/v2/pkg/version.Version=$version" -o "$dir/nerdctl" ./cmd/nerdctl
echo "built $("$dir/nerdctl" --version) into $dir in $(($(date +%s) - start))s"
