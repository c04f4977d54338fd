#!/usr/bin/env bash
# Installs the Debian packages lazysnap's tests and demo use, if missing
# (zlib1g-dev: the test-only SOCI oracle, benchmarks/peer/soci, builds with cgo;
# systemd: systemd-analyze verify checks the units in TestInstall;
# pigz: one of the compressors of the zran corpus, TestCorpus).
set -euo pipefail
pkgs=(containerd runc fuse3 docker-registry stargz-snapshotter umoci skopeo podman debootstrap busybox-static zlib1g-dev systemd pigz)
missing=()
for p in "${pkgs[@]}"; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
	exit 0
fi
echo "installing: ${missing[*]}"
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO=sudo
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
