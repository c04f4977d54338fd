// Package convert converts whole container images to eStargz: every tar
// layer becomes an eStargz blob, the manifest records each layer's TOC digest
// and uncompressed size as annotations, and the config's diff_ids follow the
// new layers.
//
// # Locations
//
// Image converts between OCI image layouts, as directories or as tar
// archives of one (what `skopeo copy oci-archive:` and `ctr images export`
// produce, and what `ctr images import` reads). ImageAt converts between
// Locations, each a layout or a registry reference: a registry source is
// pulled (Pull: the index or manifest, every platform's manifest, configs
// and layers) into a temporary layout, converted, and a registry
// destination pushed (Push) from the converted layout. ParseLocation tells
// the two apart by a fixed rule on the string ("docker://" and "oci:"
// prefixes, else a host-looking first path component means a reference),
// never by what exists on disk.
//
// Registries are reached through Options.Resolver, a containerd
// remotes.Resolver: the caller decides the hosts configuration and
// credentials (lazysnap's command builds containerd's docker resolver from
// the hosts directory and the Docker config, as serve does). A push needs a
// host with the push capability. Blobs and manifests the destination
// registry has already are not uploaded again (the resolver's existence
// check); child manifests of an index are pushed by digest and the root
// under the destination tag. Non-distributable (foreign) layers are
// neither pulled nor pushed; the converted manifest keeps them as they
// are.
//
// # Errors
//
// Errors name the blob or layer that failed and wrap estargz's sentinels
// where the layer itself is bad. Every descriptor is checked where it
// enters (index.json entries, index children, configs, layers, a
// registry's resolved root and children): a missing or malformed digest,
// an algorithm other than sha256, sha384 or sha512, a negative size or a
// media type that is not type/subtype is ErrLayout (ErrPull from a
// registry) naming the descriptor. The converted image is written to a
// temporary directory beside the destination and put in place only once
// every layer has converted, so a failed run leaves no destination (or an
// existing destination directory as it was). Registry failures
// wrap ErrPull or ErrPush and name the reference and, where one failed, the
// blob; containerd's error (errdefs.ErrNotFound, an unexpected HTTP status)
// stays in the chain. A push the hosts configuration or the registry
// refuses (no push capability, 401, 403) is ErrPushDenied, which wraps
// ErrPush. A reference that does not parse, or a destination given by
// digest, is ErrRef. A registry destination is pushed only after the whole
// image converted; ImageAt removes its temporary layouts whether it
// succeeds or fails, and stops at the context's cancellation.
//
// Report.WriteSummary and IndexReport.WriteSummary write the lines
// `lazysnap convert` and `lazysnap index` end with; ReadPrioritized reads
// a -prioritized-files list.
//
// The package does not log: containerd's code, which logs through the
// context, is silenced; progress is reported through Options.Progress and
// Options.Transfer.
//
// # Concurrency
//
// Layers convert one after another; each conversion uses every CPU through
// estargz.Convert. Registry transfers run up to four blobs at once;
// Options.Transfer is called one call at a time.
package convert
