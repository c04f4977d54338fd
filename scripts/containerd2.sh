#!/usr/bin/env bash
# Builds containerd 2.x (containerd, ctr, containerd-shim-runc-v2) from the Go
# module proxy, for the tests that run against containerd 2.x:
#
#   scripts/containerd2.sh [DIR]     # default /var/tmp/lazysnap-containerd2
#   LAZYSNAP_CONTAINERD2_DIR=DIR go test ./cmd/lazysnap ./internal/testenv/containerd
#   LAZYSNAP_TESTENV_CONTAINERD_DIR=DIR go test ./cmd/lazysnap   # every e2e test on 2.x
#
# CONTAINERD2_VERSION picks the release. With empty Go caches the build takes
# about 7 minutes on 2 cores (nearly all of it compiling), so CI does not run
# it. Does nothing if DIR already holds that version.
set -euo pipefail
version=${CONTAINERD2_VERSION:-v2.4.2}
dir=${1:-/var/tmp/lazysnap-containerd2}
export PATH=$PATH:/usr/local/go/bin
bins=(containerd ctr containerd-shim-runc-v2)

have() {
	for b in "${bins[@]}"; do
		[ -x "$dir/$b" ] || return 1
	done
	"$dir/containerd" --version | grep -qE " v?${version#v}([+~ ]|$)"
}

if have; then
	echo "containerd $version already in $dir"
	exit 0
fi
mkdir -p "$dir"
pkgs=()
for b in "${bins[@]}"; do
	pkgs+=("github.com/containerd/containerd/v2/cmd/$b@$version")
done
start=$(date +%s)
# go install pkg@version builds with the module's own go.mod (it has no
# replace directives), as a release of containerd does
GOBIN="$dir" go install "${pkgs[@]}"
have || { echo "containerd2.sh: $dir/containerd is not $version" >&2; exit 1; }
echo "built $("$dir/containerd" --version) into $dir in $(($(date +%s) - start))s"
echo "run the containerd 2.x tests with: LAZYSNAP_CONTAINERD2_DIR=$dir go test ./cmd/lazysnap ./internal/testenv/containerd"
