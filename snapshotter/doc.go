// Package snapshotter is lazysnap's containerd snapshotter: an overlayfs
// snapshots.Snapshotter that speaks containerd's remote-snapshot protocol,
// mounting eStargz layers through a FileSystem instead of letting
// containerd download and unpack them.
//
// # Layout
//
//	root/metadata.db             snapshot records (containerd's snapshots/storage MetaStore, bolt)
//	root/snapshots/<id>/fs       upper dir of an active snapshot, contents of a committed one,
//	                             or the FileSystem's mountpoint of a remote layer
//	root/snapshots/<id>/work     overlay work dir of an active snapshot
//
// Mounts of an active snapshot without parents is a read-write bind mount of
// its fs; with parents, an overlay with lowerdir = the parents' fs dirs,
// nearest first (a remote parent's fs is its FUSE mountpoint), upperdir and
// workdir. A view is a read-only bind of its only parent or an overlay
// without upper dir. Options carry index=off where the kernel knows it.
//
// # User namespaces
//
// containerd 2 labels a user-namespaced container's snapshot with its ID
// maps (snapshots.LabelSnapshotUIDMapping, LabelSnapshotGIDMapping) when
// the snapshotter has the "remap-ids" capability (for a proxy plugin: its
// capabilities in containerd's config). As containerd's overlay snapshotter
// does, the snapshot's mounts then carry uidmap= and gidmap=, with which
// containerd's mount code makes the lower dirs idmapped mounts, and the
// upper dir's root belongs to the container's root. Remote layers are
// idmapped like the others (their FileSystem must allow it; package fs
// does on Linux 6.12 or later): nothing is copied or chowned. Labels that
// do not parse or do not map the container's root are InvalidArgument.
//
// # Remote-snapshot protocol
//
// containerd's unpacker calls Prepare(key, parent) with the label
// LabelTargetSnapshotRef = the layer's chain ID and the layer descriptor's
// "containerd.io/snapshot/..." annotations (see labels.go for those that
// `ctr-remote image rpull` and the CRI plugin set). Prepare then:
//
//  1. returns errdefs.ErrAlreadyExists at once if the target is already
//     committed (another namespace pulled the image);
//  2. creates the active snapshot key and calls FileSystem.Mount on its fs
//     dir with all the labels Prepare got;
//  3. on success commits key under the target name, labelled LabelRemote,
//     and returns errdefs.ErrAlreadyExists: containerd finds the target
//     (through a Walk filtered on the target label and parent) and skips
//     the layer's download and unpack;
//  4. on failure falls back: the reason (a Reason wrapped in the Mount
//     error, ReasonTimeout, ReasonMountError, or ReasonMissingLabels /
//     ReasonInvalidLabels when the labels do not name a layer, in which
//     case Mount is not called) is logged through log.G(ctx) with the key,
//     target, reference and digest, counted in Stats, and the active
//     snapshot's mounts are returned so that containerd unpacks the layer
//     the ordinary way. Fallback is per layer: one image may mix remote and
//     unpacked layers.
//  5. except when the FileSystem is a Puller and the Mount error wrapped
//     ReasonNotLazy (the layer is in no lazy format): then the Puller
//     pulls the layer itself into the active snapshot's fs dir (at line
//     rate: downloaded, inflated and unpacked at once, checked against
//     its digest), the diff ID it reports is checked against the target
//     chain ID (with the parent's name), and the snapshot is committed
//     under the target name as an ordinary snapshot (no LabelRemote;
//     containerd sees what its own unpack would have left) and Prepare
//     returns errdefs.ErrAlreadyExists, so containerd never fetches the
//     blob. A failed pull removes the snapshot and Prepare returns the
//     error (containerd's pull fails with it; Fallbacks lists it under
//     ReasonPullFailed). WithoutPull turns this off.
//
// FileSystem.Mount receives every label of the snapshot. The ones that
// matter are the image reference (LabelCRIImageRef or LabelStargzReference),
// the layer digest (LabelCRILayerDigest or LabelStargzDigest), the TOC
// digest LabelTOCDigest when present, and, as hints, the neighbouring
// layers, prefetch size and URLs. ParseLayerSource reads them; it is what
// the snapshotter uses to decide whether a layer can be remote at all.
// Labels without the "containerd.io/snapshot/" prefix never reach a
// snapshotter, so the eStargz uncompressed-size annotation is not there.
//
// Before handing out mounts over remote parents (Prepare, View, Mounts) the
// snapshotter calls FileSystem.Check on each; Check should therefore be
// cheap. A failing Check on a live mount is errdefs.ErrUnavailable; a layer
// whose mount is gone or dead (ENOTCONN) or that failed to restore is
// mounted again first.
//
// # Restart and Close
//
// Close closes the metadata store and by default leaves remote layers
// mounted: overlays of running containers hold their lower dirs, so
// unmounting would break them. WithUnmountOnClose unmounts them instead,
// for a full teardown.
//
// New over an existing root restores every snapshot labelled LabelRemote,
// passing FileSystem.Mount the labels stored on the committed snapshot (the
// client's labels plus LabelRemote). A mountpoint still mounted and healthy
// by FileSystem.Check is kept as it is; any other mount there (dead because
// its FUSE server exited, or unknown to this FileSystem) is unmounted
// (FileSystem.Unmount, then a lazy detach) and replaced. A layer that cannot
// be mounted is logged and counted (Stats.RestoreFailures, Unavailable) and
// New still succeeds; the next Prepare, View or Mounts that needs it tries
// to mount it again and fails with errdefs.ErrUnavailable if it cannot.
//
// A containerd restart does not touch any of this: lazysnap serves the
// snapshotter as a proxy plugin from its own process, so its mounts and
// FUSE servers live on while containerd restarts, and containers keep
// running. A restart of lazysnap itself ends FUSE servers that run inside
// it; running containers over those layers then see ENOTCONN until they
// are restarted, while new containers get the restored mounts. Keeping
// running containers alive across a lazysnap restart needs FUSE servers
// that outlive the process (a FileSystem whose Check vouches for them
// after the restart); the snapshotter already keeps such mounts.
//
// # Errors
//
// Errors at the API carry errdefs categories, wrapped with %w: NotFound
// (no such snapshot or parent), AlreadyExists (key or name taken, and the
// protocol's answer for a remote layer), FailedPrecondition (removing a
// snapshot with children, committing a view, Mounts of a committed
// snapshot), InvalidArgument (bad options or labels, parent not committed,
// a root overlay cannot name) and Unavailable (a remote parent that cannot
// serve). A FileSystem.Mount error is never returned by Prepare: it turns
// into a fallback, unless the caller's context ended. Failures after a
// snapshot's record is gone (unmount, directory removal) are logged and
// left for Cleanup, which removes every directory no snapshot uses,
// detaching mounts inside it first so that removal never descends into a
// mounted layer.
//
// # Concurrency
//
// A Snapshotter is safe for concurrent use. Metadata changes run in bolt
// transactions (one writer at a time); FileSystem calls are made outside
// any write transaction, so a slow Mount delays only its own Prepare. Two
// Prepares of the same target may both mount; the first commit wins and the
// other unmounts and answers ErrAlreadyExists. Check and remount of one
// layer are serialized; restore and Check of many layers run in parallel
// (WithConcurrency).
package snapshotter
