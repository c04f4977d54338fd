// Package benchmarks holds lazysnap's Go micro-benchmarks and the
// cold-start harness (TestColdStart, run by `make bench`; see README.md).
//
// The converter benchmarks run on a real root filesystem: set
// LAZYSNAP_ROOTFS_TAR to an uncompressed tar of one (`make rootfs` builds a
// Debian bookworm minbase tar with debootstrap), otherwise they skip.
//
//	LAZYSNAP_ROOTFS_TAR=/var/tmp/lazysnap-rootfs/bookworm.tar \
//	  go test ./benchmarks -run '^$' -bench Convert -benchtime 3x
//
// The cold-start harness pulls and starts containers from a real registry
// behind an emulated WAN, with fresh containerd and snapshotter state for
// every run, in three modes (overlayfs pull, lazysnap without prefetch,
// lazysnap with the workload's files prioritized) and four workloads; it
// writes results/coldstart.{md,svg,json}. It runs only with LAZYSNAP_BENCH=1:
//
//	cd benchmarks && LAZYSNAP_BENCH=1 go test -run '^TestColdStart$' -v -timeout 60m .
//
// Package convert/record (what `lazysnap convert -record` runs) and the
// command benchmarks/cmd/lazysnap-record find the files a workload opens,
// for `lazysnap convert -prioritized-files`.
package benchmarks
