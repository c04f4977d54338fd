#!/usr/bin/env bash
# Builds the root filesystem of the cold-start benchmark's images, once:
# Debian bookworm minbase (scripts/rootfs.sh) plus python3 installed with
# apt-get in a chroot, as an uncompressed tar beside the minbase one.
#   benchmarks/mkimages.sh [DIR]   (DIR defaults to /var/tmp/lazysnap-rootfs)
# Prints the tar's path. Falls back to debootstrap --include=python3 when
# apt-get in the chroot fails.
set -euo pipefail
dir=${1:-/var/tmp/lazysnap-rootfs}
out="$dir/bookworm-python.tar"
if [ -s "$out" ]; then
	echo "$out"
	exit 0
fi
here=$(cd "$(dirname "$0")" && pwd)
if [ ! -x "$dir/bookworm/bin/sh" ]; then
	"$here/../scripts/rootfs.sh" "$dir" >&2
fi
root="$dir/bookworm-python"
log="$dir/bookworm-python.log"
cleanup() {
	for m in dev/pts dev proc sys; do
		mountpoint -q "$root/$m" 2>/dev/null && umount -l "$root/$m"
	done
	return 0
}
trap cleanup EXIT
if [ ! -x "$root/usr/bin/python3" ]; then
	rm -rf "$root"
	echo "python3 into a copy of $dir/bookworm (apt-get in a chroot, once)" >&2
	cp -a "$dir/bookworm" "$root"
	mount -t proc proc "$root/proc"
	mount --rbind /dev "$root/dev"
	cp /etc/resolv.conf "$root/etc/resolv.conf"
	if ! { chroot "$root" apt-get update &&
		DEBIAN_FRONTEND=noninteractive chroot "$root" apt-get install -y --no-install-recommends python3 &&
		chroot "$root" apt-get clean; } >"$log" 2>&1; then
		tail -20 "$log" >&2
		cleanup
		echo "apt-get in the chroot failed; debootstrap --include=python3 instead" >&2
		rm -rf "$root"
		debootstrap --variant=minbase --include=python3 bookworm "$root" >"$log" 2>&1 ||
			{ tail -20 "$log" >&2; exit 1; }
	fi
	cleanup
	rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*.bin
	: >"$root/etc/resolv.conf"
fi
"$root/usr/bin/python3" -c 'pass' 2>/dev/null || chroot "$root" /usr/bin/python3 -c 'pass'
tar --numeric-owner -C "$root" -cf "$out.tmp" .
mv "$out.tmp" "$out"
echo "$out"
