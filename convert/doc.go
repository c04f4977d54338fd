// Package convert converts whole container images to eStargz (or
// zstd:chunked): every tar layer becomes a blob of the format, the
// manifest records the annotations that locate and vouch for each layer's
// index, and the config's diff_ids follow the new layers. IndexImage
// instead gives an image's gzip layers SOCI zTOCs, the layers unchanged.
//
// # Writers
//
// A layer is written by its format's layer.Writer (estargz.Writer,
// zstdchunked.Writer, soci.Writer), chosen by name from writers, the one
// list of them (Formats names them): Image uses the writers that read a
// layer's tar (Options.Format), IndexImage those that read its blob
// (IndexOptions.Format). A layer a writer skips (already of its format;
// not a gzip layer, for SOCI) is kept as it is, with the writer's reason.
// A converted layer drops the source's annotations that any writer
// writes. A blob an indexing writer read is checked against its digest
// (ErrLayout).
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
// Errors name the blob or layer that failed and wrap the format's
// sentinels where the layer itself is bad. A format no writer of the list
// writes is ErrFormat. Every descriptor is checked where it
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
// its writer (estargz.Convert); IndexImage indexes IndexOptions.Parallel
// layers at once. Registry transfers run up to four blobs at once;
// Options.Transfer is called one call at a time.
package convert
