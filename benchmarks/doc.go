// Package benchmarks holds lazysnap's Go micro-benchmarks and, later, the
// pull-versus-lazy-start harness.
//
// The converter benchmarks run on a real root filesystem: set
// LAZYSNAP_ROOTFS_TAR to an uncompressed tar of one (`make rootfs` builds a
// Debian bookworm minbase tar with debootstrap), otherwise they skip.
//
//	LAZYSNAP_ROOTFS_TAR=/var/tmp/lazysnap-rootfs/bookworm.tar \
//	  go test ./benchmarks -run '^$' -bench Convert -benchtime 3x
package benchmarks
