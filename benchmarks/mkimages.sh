#!/usr/bin/env bash
# Builds the root filesystems of the cold-start benchmark's images, once:
# Debian bookworm minbase (scripts/rootfs.sh) plus Debian packages installed
# with apt-get in a chroot, as an uncompressed tar beside the minbase one.
#   benchmarks/mkimages.sh [DIR] [VARIANT]
# DIR defaults to /var/tmp/lazysnap-rootfs. VARIANT is
#   python  python3 (bookworm-python.tar, ~50 MB more than minbase; the default)
#   torch   python3-torch, PyTorch as Debian packages it (bookworm-torch.tar,
#           several hundred MB; only the `torch` workload uses it)
# Prints the tar's path. For python, falls back to debootstrap
# --include=python3 when apt-get in the chroot fails.
set -euo pipefail
dir=${1:-/var/tmp/lazysnap-rootfs}
variant=${2:-python}
case "$variant" in
python) pkgs=python3 check='pass' ;;
torch) pkgs=python3-torch check='import torch' ;;
*)
	echo "mkimages.sh: unknown variant $variant (python or torch)" >&2
	exit 2
	;;
esac
out="$dir/bookworm-$variant.tar"
if [ -s "$out" ]; then
	echo "$out"
	exit 0
fi
here=$(cd "$(dirname "$0")" && pwd)
if [ ! -x "$dir/bookworm/bin/sh" ]; then
	"$here/../scripts/rootfs.sh" "$dir" >&2
fi
root="$dir/bookworm-$variant"
log="$dir/bookworm-$variant.log"
cleanup() {
	for m in dev/pts dev proc sys; do
		mountpoint -q "$root/$m" 2>/dev/null && umount -l "$root/$m"
	done
	return 0
}
trap cleanup EXIT
if [ ! -s "$root/.lazysnap-done" ]; then
	rm -rf "$root"
	echo "$pkgs into a copy of $dir/bookworm (apt-get in a chroot, once)" >&2
	cp -a "$dir/bookworm" "$root"
	mount -t proc proc "$root/proc"
	mount --rbind /dev "$root/dev"
	cp /etc/resolv.conf "$root/etc/resolv.conf"
	if ! { chroot "$root" apt-get update &&
		DEBIAN_FRONTEND=noninteractive chroot "$root" apt-get install -y --no-install-recommends $pkgs &&
		chroot "$root" apt-get clean; } >"$log" 2>&1; then
		tail -20 "$log" >&2
		cleanup
		if [ "$variant" != python ]; then
			echo "apt-get in the chroot failed" >&2
			exit 1
		fi
		echo "apt-get in the chroot failed; debootstrap --include=python3 instead" >&2
		rm -rf "$root"
		debootstrap --variant=minbase --include=python3 bookworm "$root" >"$log" 2>&1 ||
			{ tail -20 "$log" >&2; exit 1; }
	fi
	cleanup
	rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*.bin
	: >"$root/etc/resolv.conf"
	echo "$pkgs" >"$root/.lazysnap-done"
fi
chroot "$root" /usr/bin/python3 -c "$check"
tar --numeric-owner --exclude=./.lazysnap-done -C "$root" -cf "$out.tmp" .
mv "$out.tmp" "$out"
echo "$out"
