// Package remote is the lazy mount: it implements snapshotter.FileSystem
// (FS) over a registry (Source, NewRegistrySource over a fetcher.Fetcher),
// the layer formats, and fs's FUSE layer filesystem.
//
// # Concepts
//
// Mount reads what the snapshot's labels say of a layer (image reference,
// blob digest, and the digest of the layer's index when the manifest
// annotates it), picks the layer's Format from its descriptor (pickFormat
// is the only code that knows every format), opens the blob (one request
// for its tail, which holds the eStargz footer and, for small layers, the
// whole TOC; the whole TOC of any size when the layer's tail-size
// annotation, lazysnap convert's, says how much that is), reads and
// verifies the index against its digest, and mounts an fs.Layer at the
// mountpoint. The first Mount of an image also reads the image's
// configuration, while it reads the TOC, and each of its lazy layers then
// fetches the program the entrypoint or command names, with what that
// says is read next (its libraries), and the user database, before the
// container asks (start.go). The layer's chunks are fetched when read,
// verified against the index, and stored in sparse content files under
// Options.Root/content, in a directory named by the blob digest together
// with the index digest: what the Mount verified (see FS for why the blob
// digest alone is not enough).
//
// A Format is one lazily loadable layer format (layer.Format, whose
// api.go declares the contract and its optional capabilities): the digest
// its descriptor names for the index (IndexDigest) and how the index is
// read and verified (Open). Three are listed in formats, each in a
// package of its own: eStargz (estargz.Format: the TOC at the blob's end,
// its digest annotated on the layer), zstd:chunked (zstdchunked.Format:
// the same TOC in a zstd skippable frame, its checksum annotated) and
// SOCI (soci/lazy.Format). When the first format that claims a layer finds
// its blob another format's (layer.ErrOtherFormat: the eStargz library's
// zstd:chunked layers carry an eStargz TOC digest), the next that claims
// it reads it. A SOCI layer is an unmodified gzip blob whose image has a
// SOCI index: the Source, reading the image's manifest, finds the index
// (v2: the manifest's com.amazon.soci.index-digest annotation; v1: the
// manifest's referrers, through the API or its tag schema) and annotates
// the layer descriptor with its zTOC's digest and size (lazysnap's own
// annotations; a layer without a zTOC gets the reason instead, for the
// fallback); soci/lazy says how the zTOC is read and checked against the
// layer. A Decoder that finds its index contradicted by the layer
// (layer.ErrMismatch) has the index marked bad, as a failed BlobChecker
// does (Verified layers below).
// SOCI v1 indexes, which come from the referrers rather than the image,
// are used only with WithSociV1. A hardlink to a directory is refused.
//
// When the first layer of an image is mounted, its labels list the layers
// above it: the FS reads their tails and TOCs in the background (the
// warmer), so that their Mounts, which containerd makes one after another,
// need no round trip. Nothing read ahead is trusted: each Mount verifies
// its index against its own labels.
//
// With Options.Profiles, the FS learns prefetch profiles (package
// profile): the first start of an image records the chunks its container
// reads, in order, until it goes quiet; a later Mount of the image, here or
// on another node that fetches the profile from the registry (the image
// manifest's referrers), prefetches them before anything reads them. The
// lookup starts at the top of the image's first Mount and overlaps the
// blob's open; a Mount does not wait for it: a layer mounted before it
// ends keeps the chunks its readers access and, once it ends, records
// them or prefetches the profile (ProfileState "looking up" meanwhile).
// A profile only steers fetching: each chunk is verified as
// always, and one that does not fit the layer (another image, a stale TOC,
// a path or chunk not in the index) is ignored with the reason in
// LayerInfo.ProfileState.
//
// Layers lists the mounted layers with their fetch.Stats, for status and
// metrics.
//
// Verified layers (Options.VerifyBlob): each chunk is verified against the
// index when it is fetched, but the index does not cover every byte of the
// blob (gzip headers, bytes between members, entries without content): a
// registry may serve a blob whose files match the index and whose whole
// differs from what the layer's digest names, and which an ordinary pull
// (verified against that digest) would refuse. So once a layer is complete
// (fetch.Layer.Complete: every chunk present), the blob is read in order, from
// the fetcher's chunk cache where it holds the ranges and from the registry
// for the gaps (fetcher.Blob.CopyTo: memory holds one range, whatever the
// blob's size), and hashed against the digest; a format's own check of the
// complete layer (BlobChecker, on the Decoder its Open returns) reads the
// same stream. A mismatch is confirmed by reading the whole blob from the
// registry, the cached ranges dropped, before the blob is marked bad (a
// failed BlobChecker marks only that index of the blob: the blob itself is
// sound): LayerInfo.Verification, BadLayers and VerifyStats say so, the
// mark is kept under Root/verify/bad across restarts (removing the file
// clears it), and every new Mount of the blob is refused with
// snapshotter.ReasonVerification, so that the snapshotter pulls it the
// ordinary way (which fails if the registry still serves those bytes).
// Mounts already running keep serving: each chunk they serve was verified
// against the index. A committed snapshot of a bad blob is not mounted
// again either (after the process serving it restarts, the snapshotter
// finds it unavailable): remove the image and pull it again. Only complete
// layers are verified: with the background fetch off, a layer stays
// "pending" unless readers fetch all of it. A verified layer is marked in
// its content directory, so that later Mounts of it do not read it again.
// One verification of a layer runs at a time however many mounts it has,
// and at most two read blobs at once; one that cannot read the blob is
// retried with a backoff while the layer stays mounted.
//
// Learned profiles (Options.Profiles, package profile): the first Mount
// of an image looks up its profile, keyed by manifest digest (the CRI
// label) or else the reference, in the local Store, then, with Fetch, in
// the registry (the referrers API or its tag schema; found profiles are
// stored locally). A layer the profile lists, with the same TOC digest
// and every chunk in the index, has those chunks prefetched at mount, in
// as few requests as possible, before the prioritized files; otherwise
// the profile is ignored for that layer and LayerInfo.ProfileState says
// why ("ignored: stale TOC ..."). A profile for another image is ignored
// and, as when there is none, the start is recorded (fs's OnChunkAccess)
// until it goes quiet (profile.Limits; FlushProfiles ends it at once),
// stored and, with Publish, pushed. A profile only steers what is
// fetched: every chunk is verified against the TOC as always. The
// registry lookup happens once per image, within the first Mount
// (ProfileOptions.LookupTimeout).
//
// Line-rate pulls (Pull, snapshotter.Puller): a layer Mount found in no
// lazy format is pulled whole instead (package unpack): its blob fetched
// over Options.Pull.Connections range requests when they pay
// (fetcher.Blob.ParallelCopy), inflated and applied to the snapshot's
// directory while it arrives, checked against the layer digest. At most
// Options.Pull.Concurrency pulls run at once, counting the spools: when a
// pull starts, the layers its labels list above it that are not lazy
// either are downloaded ahead into Root/spool (spool.go) while slots are
// free, and their own Pulls unpack from the file as it grows (a spool no
// Pull takes within warmTTL is removed; Close ends them all). The zTOC
// the pass builds of a gzip layer is kept as Root/ztoc/<algorithm>-<hex
// of the layer digest>: a later Mount of that layer uses it before any
// SOCI index of the image (format "soci (local zTOC)"). It is trusted as
// an index the image names is: it was built from bytes checked against
// the layer digest, and its spans are verified when read as always.
// Options.Pull.Sink, if set, gets a copy of each blob (containerd's
// content store). Pulls lists the pulls, in flight and done.
//
// Learned indexes (publish.go): with Options.Publish, once a pull of an
// image whose Pulls kept zTOCs is over (publisher: its top layer done and
// no Pull of it running, or none for PublishOptions.Quiet), a goroutine
// of the FS pushes one v1 SOCI index of the image (the local zTOCs of its
// layers, subject the image manifest) to the publish repository with
// profile.PushReferrer; the pushes are serialized by FS.pubMu, Close
// cancels them, and PullInfo.Published says how each went. A Source with WithTrustedSociRepositories looks for v1 indexes
// among the manifest's referrers in those repositories first and uses
// them without WithSociV1, fetching their zTOCs from there (annZtocRepo):
// whoever can push to a trusted repository chooses what lazy mounts
// serve until each layer is complete and checked against its digest.
//
// Handover: with Options.Handover, a mount can be served by another
// process. Handover gives its MountState (mountpoint, labels, the FUSE
// session) and a duplicate of its /dev/fuse descriptor; Adopt, in the
// other process, opens the layer as Mount does and serves the live mount
// (fs.Adopt); Detach stops serving every mount and leaves them
// mounted.
//
// Panics: a panic while a mounted layer is decoded or served (a bug met
// on its bytes) is contained by fs and fs/fetch to that layer (fetch.ErrPanic): the read
// fails with EIO, and the layer is marked bad as a failed check of it
// against its index is (that index of the blob; "bad: panic: V at F" in
// LayerInfo.Verification, with verification off too, and in BadLayers),
// so that new Mounts of it fall back. Remote contains the panics of its
// own calls into a format's code over registry bytes in one place
// (contain): a Mount's (the index's Open: it fails as not lazy, with the
// panic as the reason), the warmer's, and a BlobChecker's (the layer is
// marked bad with the panic as the reason).
//
// # Errors
//
// Mount's errors wrap a snapshotter.Reason, so that the snapshotter falls
// back to an ordinary pull and counts it: ReasonVerification when an index
// does not match its digest, or a mounted blob is named with another index;
// ReasonNotLazy when the layer is in no format, or its index is malformed;
// ReasonVerification too when the blob was marked bad; ReasonTimeout when
// the registry timed out (fetcher.ErrTimeout) reading the index;
// the fetcher's errors otherwise. The errors keep their kind (%w): a
// registry's error is never taken for a malformed index, and one function
// (fallbackReason) maps every format's errors to reasons. Check and Usage of a mountpoint that has
// no layer return ErrNotMounted. The package does not log: read failures
// and mounts are reported through Options.OnError and Options.OnMount;
// profile lookup, store and publish failures through
// ProfileOptions.OnError (the Mount goes on without the profile).
//
// # Concurrency
//
// Every method of FS may be called concurrently, for different
// mountpoints; Mounts of the same layer at different mountpoints share its
// content directory (the same verified bytes). Mount does not keep its ctx
// (a Prepare request's) beyond its return: the blob, prefetch and
// background fetch run detached from it until Unmount.
//
// Lifetime: New starts nothing; every goroutine the FS starts (read
// ahead, profile lookups, verification, a mounted layer's fetching and
// FUSE server) runs under the FS's lifetime context, which Close ends:
// Close cancels the Mounts in progress, stops serving the layers still
// mounted (as Detach), ends the profile recordings (stored, not
// published) and returns once every one of those goroutines has. An
// image's profile state is kept while a layer of it is mounted or being
// mounted, and dropped (its recording ended) when the last one unmounts.
package remote

import "errors"

var (
	// ErrNotMounted: no layer is mounted at the mountpoint.
	ErrNotMounted = errors.New("remote: no layer mounted")
	// ErrClosed: the FS was closed (FS.Close).
	ErrClosed = errors.New("remote: closed")
)
