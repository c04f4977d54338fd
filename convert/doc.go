// Package convert converts whole container images to eStargz: every tar
// layer becomes an eStargz blob, the manifest records each layer's TOC digest
// and uncompressed size as annotations, and the config's diff_ids follow the
// new layers.
//
// Images are read from and written to OCI image layouts, as directories or
// as tar archives of one (what `skopeo copy oci-archive:` and `ctr images
// export` produce, and what `ctr images import` reads). Conversion against
// registries is built on the fetcher and comes with it.
//
// # Errors
//
// Errors name the blob or layer that failed and wrap estargz's sentinels
// where the layer itself is bad. Nothing is written to the destination's
// index.json until every layer has converted, so a failed run leaves the
// destination as it was (apart from unreferenced blobs).
//
// # Concurrency
//
// Layers convert one after another; each conversion uses every CPU through
// estargz.Convert.
package convert
