#!/usr/bin/env bash
# lazysnap demo, end to end on loopback. What runs today:
#   1. a real image: Debian bookworm minbase as one layer (umoci)
#   2. `lazysnap convert` to eStargz, timed, next to Debian's ctr-remote
#   3. containerd (its own temp root) imports the converted image and runs a
#      container from it with the ordinary overlayfs snapshotter, proving the
#      eStargz image is an ordinary image too
# The lazy start (registry -> lazysnap snapshotter -> container before the
# image is downloaded) is printed as "not yet": it lands with the snapshotter.
set -euo pipefail
bin=$(realpath "${1:-bin/lazysnap}")
rootfs_tar=${2:-/var/tmp/lazysnap-rootfs/bookworm.tar}
work=$(mktemp -d /tmp/lazysnap-demo.XXXXXX)
ctrd_pid=""
cleanup() {
	if [ -n "$ctrd_pid" ]; then
		kill "$ctrd_pid" 2>/dev/null || true
		wait "$ctrd_pid" 2>/dev/null || true
	fi
	grep -o "$work[^ ]*" /proc/mounts 2>/dev/null | sort -r | xargs -r -n1 umount -l 2>/dev/null || true
	rm -rf "$work"
}
trap cleanup EXIT
ms() { date +%s%3N; }
say() { printf '\n== %s\n' "$*"; }

say "building image from $(basename "$rootfs_tar") ($(du -m "$rootfs_tar" | cut -f1) MB)"
umoci init --layout "$work/img" >/dev/null
umoci new --image "$work/img:demo" >/dev/null
mkdir -p "$work/bundle"
umoci unpack --image "$work/img:demo" "$work/bundle" >/dev/null
tar -C "$work/bundle/rootfs" -xf "$rootfs_tar"
umoci repack --image "$work/img:demo" "$work/bundle" >/dev/null
umoci config --image "$work/img:demo" --config.cmd /bin/sh >/dev/null
umoci gc --layout "$work/img"
rm -rf "$work/bundle"
(cd "$work/img" && tar -cf "$work/img.tar" .)

say "lazysnap convert (eStargz, gzip level 6 on all cores)"
t0=$(ms)
"$bin" convert "$work/img" "$work/esgz.tar"
t1=$(ms)
ours=$((t1 - t0))

say "starting containerd on a private socket"
mkdir -p "$work/ctrd"
cat >"$work/ctrd/config.toml" <<TOML
version = 2
root = "$work/ctrd/root"
state = "$work/ctrd/state"
disabled_plugins = ["io.containerd.grpc.v1.cri"]
[grpc]
  address = "$work/ctrd/sock"
[ttrpc]
  address = "$work/ctrd/sock.ttrpc"
TOML
containerd --config "$work/ctrd/config.toml" >"$work/ctrd/log" 2>&1 &
ctrd_pid=$!
ctr() { command ctr --address "$work/ctrd/sock" --namespace lazysnap-demo "$@"; }
for _ in $(seq 100); do ctr version >/dev/null 2>&1 && break; sleep 0.1; done
ctr version >/dev/null

ctr images import --base-name demo/orig --digests "$work/img.tar" >/dev/null
orig=$(ctr images ls -q | grep '^demo/orig' | head -1)
say "reference: ctr-remote images convert --estargz --oci (gzip level 9, one core)"
t0=$(ms)
ctr-remote --address "$work/ctrd/sock" --namespace lazysnap-demo images convert --estargz --oci "$orig" demo/ctr-remote:esgz >/dev/null
t1=$(ms)
theirs=$((t1 - t0))

say "running a container from the lazysnap-converted image (overlayfs, ordinary pull)"
ctr images import --base-name demo/esgz --digests "$work/esgz.tar" >/dev/null
ref=$(ctr images ls -q | grep '^demo/esgz' | head -1)
t0=$(ms)
ctr run --rm "$ref" demo1 /bin/sh -c 'echo "hello from $(. /etc/os-release; echo $PRETTY_NAME)"'
t1=$(ms)

say "results"
printf '%-44s %8s\n' "step" "ms"
printf '%-44s %8d\n' "lazysnap convert (ours)" "$ours"
printf '%-44s %8d\n' "ctr-remote convert (reference)" "$theirs"
printf '%-44s %8d\n' "unpack + run from converted image (overlayfs)" "$((t1 - t0))"
printf '%-44s %8s\n' "lazy pull + start through lazysnap" "not yet"
echo
echo "Not yet: the registry, the lazysnap snapshotter and the lazy start arrive"
echo "with the fetcher, FUSE and snapshotter work (see README.md, Status)."
