#!/usr/bin/env bash
# lazysnap demo, end to end on loopback, everything in one temp dir:
#   1. a real image: Debian bookworm minbase as one layer (umoci)
#   2. `lazysnap convert` to eStargz (timed next to Debian's ctr-remote)
#   3. a registry (CNCF distribution), containerd and `lazysnap serve`
#   4. an ordinary pull + run of the gzip image with overlayfs, then
#      `lazysnap pull` + run of the eStargz image: the container starts
#      before the image is downloaded
set -euo pipefail
bin=$(realpath "${1:-bin/lazysnap}")
rootfs_tar=${2:-/var/tmp/lazysnap-rootfs/bookworm.tar}
work=$(mktemp -d /tmp/lzdemo.XXXXXX)
pids=()
cleanup() {
	local status=$?
	set +e
	if [ -S "$work/ctrd.sock" ]; then
		for c in $(command ctr --address "$work/ctrd.sock" -n demo tasks ls -q 2>/dev/null); do
			command ctr --address "$work/ctrd.sock" -n demo tasks kill -s KILL "$c" >/dev/null 2>&1
		done
	fi
	for ((i = ${#pids[@]} - 1; i >= 0; i--)); do
		kill "${pids[$i]}" 2>/dev/null
		wait "${pids[$i]}" 2>/dev/null
	done
	# serve's fuse manager outlives serve by design: stop it by its pid file
	if [ -f "$work/lazysnap/fusemanager.pid" ]; then
		fm=$(cat "$work/lazysnap/fusemanager.pid")
		kill "$fm" 2>/dev/null
		for _ in $(seq 100); do kill -0 "$fm" 2>/dev/null || break; sleep 0.1; done
	fi
	grep -o "$work[^ ]*" /proc/mounts 2>/dev/null | sort -r | xargs -r -n1 umount -l 2>/dev/null
	# the fd keeper exits once it holds nothing and its manager is gone
	# (within seconds); SIGTERM ends one that holds nothing at once
	if [ -f "$work/lazysnap/fdkeeper.pid" ]; then
		kill "$(cat "$work/lazysnap/fdkeeper.pid")" 2>/dev/null
	fi
	# nothing the demo started may outlive it
	local left=""
	for _ in $(seq 100); do
		left=$(leftover)
		[ -z "$left" ] && break
		sleep 0.1
	done
	if [ -n "$left" ]; then
		printf 'demo: processes left running (killed now):\n%s\n' "$left" >&2
		awk '{print $1}' <<<"$left" | xargs -r kill -9
		status=1
	fi
	if [ -n "${LAZYSNAP_DEMO_KEEP:-}" ]; then echo "kept $work"; else rm -rf "$work"; fi
	exit "$status"
}
# leftover lists the processes (pid and command line) whose command line
# names the demo's directory (builtins only: no helper process of its own)
leftover() {
	local f pid args
	for f in /proc/[0-9]*/cmdline; do
		pid=${f#/proc/}
		pid=${pid%/cmdline}
		[ "$pid" = "$$" ] && continue
		mapfile -d '' args 2>/dev/null <"$f" || continue  # stderr first: the process may be gone
		[[ "${args[*]}" == *"$work"* ]] && echo "$pid ${args[*]}"
	done
}
trap cleanup EXIT
ms() { date +%s%3N; }
say() { printf '\n== %s\n' "$*"; }
wait_for() { for _ in $(seq 200); do eval "$1" >/dev/null 2>&1 && return 0; sleep 0.05; done; echo "timed out: $1"; return 1; }
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

say "building an image from $(basename "$rootfs_tar") ($(du -m "$rootfs_tar" | cut -f1) MB)"
umoci init --layout "$work/img" >/dev/null
umoci new --image "$work/img:demo" >/dev/null
mkdir -p "$work/bundle"
umoci unpack --image "$work/img:demo" "$work/bundle" >/dev/null
tar -C "$work/bundle/rootfs" -xf "$rootfs_tar"
umoci repack --image "$work/img:demo" "$work/bundle" >/dev/null
umoci config --image "$work/img:demo" --config.cmd /bin/sh >/dev/null
umoci gc --layout "$work/img"
rm -rf "$work/bundle"

say "lazysnap convert (eStargz, gzip level 6 on all cores)"
t0=$(ms)
"$bin" convert "$work/img" "$work/esgz"
convert_ms=$(($(ms) - t0))

say "starting a registry, containerd and lazysnap on loopback"
port=$(free_port)
reg="127.0.0.1:$port"
cat >"$work/registry.yml" <<YML
version: 0.1
log: {level: warn}
storage: {filesystem: {rootdirectory: $work/registry}}
http: {addr: $reg}
YML
docker-registry serve "$work/registry.yml" >"$work/registry.log" 2>&1 &
pids+=($!)
wait_for "curl -sf http://$reg/v2/"
mkdir -p "$work/hosts/$reg"
cat >"$work/hosts/$reg/hosts.toml" <<TOML
server = "http://$reg"
[host."http://$reg"]
  capabilities = ["pull", "resolve"]
TOML
cat >"$work/lazysnap.toml" <<TOML
root = "$work/lazysnap"
address = "$work/lazysnap.sock"
[registry]
  hosts_dir = "$work/hosts"
TOML
"$bin" serve --config "$work/lazysnap.toml" >"$work/lazysnap.log" 2>&1 &
pids+=($!)
wait_for "test -S $work/lazysnap.sock"
cat >"$work/containerd.toml" <<TOML
version = 2
root = "$work/ctrd/root"
state = "$work/ctrd/state"
disabled_plugins = ["io.containerd.grpc.v1.cri"]
[grpc]
  address = "$work/ctrd.sock"
[ttrpc]
  address = "$work/ctrd.sock.ttrpc"
[proxy_plugins.lazysnap]
  type = "snapshot"
  address = "$work/lazysnap.sock"
TOML
containerd --config "$work/containerd.toml" >"$work/containerd.log" 2>&1 &
pids+=($!)
ctr() { command ctr --address "$work/ctrd.sock" --namespace demo "$@"; }
wait_for "ctr version"

say "pushing the gzip image and the eStargz image to the registry"
skopeo copy -q --dest-tls-verify=false "oci:$work/img:demo" "docker://$reg/demo:gzip"
skopeo copy -q --dest-tls-verify=false "oci:$work/esgz:demo" "docker://$reg/demo:esgz"
image_mb=$(du -sm "$work/registry" | cut -f1)

cmd='echo "hello from $(. /etc/os-release; echo $PRETTY_NAME)"'
say "ordinary pull with overlayfs, then run"
t0=$(ms)
ctr images pull --hosts-dir "$work/hosts" "$reg/demo:gzip" >/dev/null
t1=$(ms)
ctr run --rm "$reg/demo:gzip" plain /bin/sh -c "$cmd"
t2=$(ms)
plain_pull=$((t1 - t0)) plain_run=$((t2 - t1))

say "ctr-remote image convert --estargz of the same image, for comparison (Debian's stargz-snapshotter)"
t0=$(ms)
ctr-remote --address "$work/ctrd.sock" --namespace demo images convert --estargz --oci "$reg/demo:gzip" "$reg/demo:ctr-remote" >/dev/null
ctr_remote_ms=$(($(ms) - t0))

say "lazy pull through lazysnap, then run"
t0=$(ms)
"$bin" pull --address "$work/ctrd.sock" --namespace demo --hosts-dir "$work/hosts" "$reg/demo:esgz"
t1=$(ms)
ctr run --rm --snapshotter lazysnap "$reg/demo:esgz" lazy /bin/sh -c "$cmd"
t2=$(ms)
lazy_pull=$((t1 - t0)) lazy_run=$((t2 - t1))
fetched_kb=$(du -sk "$work/lazysnap/cache" 2>/dev/null | cut -f1)

say "results (loopback: no network latency, so this understates lazy pulling)"
printf '%-42s %10s %10s %10s\n' "" "pull ms" "run ms" "total ms"
printf '%-42s %10d %10d %10d\n' "overlayfs, ordinary pull (gzip image)" "$plain_pull" "$plain_run" "$((plain_pull + plain_run))"
printf '%-42s %10d %10d %10d\n' "lazysnap, lazy pull (eStargz image)" "$lazy_pull" "$lazy_run" "$((lazy_pull + lazy_run))"
echo
echo "converting the image to eStargz took lazysnap convert ${convert_ms} ms, ctr-remote ${ctr_remote_ms} ms;"
echo "the registry holds ${image_mb} MB (both images);"
echo "lazysnap had fetched ${fetched_kb} KB into its cache by the time the container finished"
echo "(prefetch and background fetch continue while containers run)."
echo "Logs: kept only while the demo runs; rerun with 'bash -x' to debug."
