// Package record finds the files a workload opens in an image, so that
// they can be converted as prioritized files (convert.Options.Prioritized,
// `lazysnap convert -prioritized-files`) and fetched at mount. It is what
// `lazysnap convert -record` runs, and what the cold-start benchmarks use
// for their prioritized images.
//
// # Concepts
//
// Unpack extracts the layers of an OCI image layout's first image into a
// directory (overlay whiteouts applied), reading the layout with
// convert.LayoutLayers and convert.LayoutBlobPath. Trace runs a command
// chrooted into that directory while a fanotify mount mark reports every
// file it opens or executes, including the ones the kernel and the
// dynamic loader open (the ELF interpreter, shared libraries), with
// symbolic links already resolved. The result is the image's regular files
// in first-access order, each once, as clean relative names
// ("usr/bin/python3.11"), the form convert.Options.Prioritized takes.
// WithRuntimeFiles puts first the files containerd itself reads from an
// image when it creates a container (etc/passwd, etc/group).
//
// Differences from a container: the command runs in the host's namespaces
// with a minimal /dev (null, zero, full, random, urandom, created in the
// directory if missing) and no /proc or /sys, as root, with the image's
// files as unpacked here.
//
// # Requirements
//
// Trace needs root (CAP_SYS_ADMIN for chroot, the bind mount and
// fanotify_init, CAP_MKNOD for /dev) and a kernel with fanotify (FAN_OPEN;
// FAN_OPEN_EXEC from Linux 5.0 is used where present). Unpack needs root
// to restore the layers' owners.
//
// # Errors
//
// Errors start with "record:". Unpack's wrap convert.ErrLayout where the
// layout cannot be read, and name the layer whose blob failed to unpack
// (a corrupt stream, a name that leaves the layer, a link through an
// absolute symlink: nothing is written outside the directory, see
// os.Root). Trace fails if the command cannot be found in the image's PATH
// (argv[0] must be a bare name or an absolute path in the image), if the
// bind mount or fanotify cannot be set up (without root: EPERM in the
// chain), if the command exits non-zero or is killed (the *exec.ExitError
// is in the chain; the context's cancellation and Options.Timeout kill
// it), or if fanotify lost events (queue overflow): a list known to be
// incomplete is never returned.
//
// # Concurrency
//
// The functions keep no shared state. Trace bind-mounts the directory onto
// itself for the duration and records every access through that mount, so
// other processes reading files under the directory meanwhile are recorded
// too; do not run two Traces, or an Unpack and a Trace, on the same
// directory at once. Trace reads the events in one goroutine of its own,
// which has finished when Trace returns.
package record
