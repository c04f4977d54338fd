#!/usr/bin/env bash
# Builds the large real-world layer of issue 21, once: Debian bookworm
# minbase with python3-torch (1.6 GB), as a tar and as a one-layer OCI
# layout packed by umoci as the issue did (umoci new, unpack, copy the tree
# into the bundle's rootfs, repack; a 765 MB tar+gzip layer).
#   DIR/rootfs     the debootstrap tree (large download, once)
#   DIR/torch.tar  its tar (scripts/zran-corpus.sh compresses it)
#   DIR/oci        OCI layout, image "torch":
#                  lazysnap index DIR/oci OUT   (OUT: a layout with its zTOC)
# Usage: scripts/torch-image.sh [DIR]   (default /var/tmp/lazysnap-torch)
set -euo pipefail
dir=${1:-/var/tmp/lazysnap-torch}
mkdir -p "$dir"
if [ ! -x "$dir/rootfs/usr/bin/python3" ]; then
	echo "debootstrap --variant=minbase --include=python3-torch bookworm $dir/rootfs (large download, once)"
	debootstrap --variant=minbase --include=python3-torch bookworm "$dir/rootfs" >"$dir/debootstrap.log" 2>&1 ||
		{ tail -20 "$dir/debootstrap.log"; exit 1; }
fi
if [ ! -s "$dir/torch.tar" ]; then
	tar --numeric-owner -C "$dir/rootfs" -cf "$dir/torch.tar.tmp" .
	mv "$dir/torch.tar.tmp" "$dir/torch.tar"
fi
ls -l "$dir/torch.tar"
if [ ! -f "$dir/oci/index.json" ]; then
	rm -rf "$dir/oci.tmp" "$dir/bundle"
	umoci init --layout "$dir/oci.tmp"
	umoci new --image "$dir/oci.tmp:torch"
	umoci unpack --image "$dir/oci.tmp:torch" "$dir/bundle"
	# rsync -a in the issue; a tar pipe keeps owners, modes, links and xattrs
	tar --numeric-owner --xattrs -C "$dir/rootfs" -cf - . | tar --numeric-owner --xattrs -C "$dir/bundle/rootfs" -xpf -
	umoci repack --image "$dir/oci.tmp:torch" "$dir/bundle"
	rm -rf "$dir/bundle"
	mv "$dir/oci.tmp" "$dir/oci"
fi
du -sh "$dir/oci"
