#!/usr/bin/env bash
# Builds a Debian bookworm minbase root filesystem and its tar, once:
# the real-world layer that the demo and the benchmarks convert.
set -euo pipefail
dir=${1:-/var/tmp/lazysnap-rootfs}
mkdir -p "$dir"
if [ ! -x "$dir/bookworm/bin/sh" ]; then
	echo "debootstrap --variant=minbase bookworm $dir/bookworm (a few minutes, once)"
	debootstrap --variant=minbase bookworm "$dir/bookworm" >"$dir/debootstrap.log" 2>&1 ||
		{ tail -20 "$dir/debootstrap.log"; exit 1; }
fi
tar --numeric-owner -C "$dir/bookworm" -cf "$dir/bookworm.tar.tmp" .
mv "$dir/bookworm.tar.tmp" "$dir/bookworm.tar"
ls -l "$dir/bookworm.tar"
