// Package profile is runtime-learned prefetch: what an image's container
// start read, per layer, recorded once and prefetched at the next cold
// start, without rebuilding the image.
//
// # Concepts
//
// A Profile is for one image, keyed by its manifest digest (or, when the
// snapshot labels carry none, its reference: Key). For each layer (blob
// digest and the digest of its index, the eStargz TOC) it lists the
// chunks read in first-access order as (path in the layer, chunk index in
// the file): stable across index builds of the same TOC, and checked
// against the mounting layer's index before use (the user, remote, does
// this). A profile only steers what is fetched: every chunk is still
// verified against the TOC.
//
// The encoding is JSON (MediaType, Version 1), parsed strictly and within
// caps (Parse: MaxBytes, MaxChunks, MaxLayers). A Recorder collects
// accesses while a start is busy and ends once it goes quiet, or after a
// total time, or at a chunk cap (Limits). A Store keeps profiles under a
// directory (Root/profiles/<key>.json), written atomically.
//
// In a registry a profile is an OCI artifact: an image manifest with
// artifactType MediaType, the empty config (OCI 1.1), one layer (the
// profile blob), and the image manifest as subject. Publish pushes it and
// Find finds it through the referrers API (GET
// /v2/<name>/referrers/<digest>?artifactType=...), or, where the registry
// has none (404), the referrers tag schema: tag sha256-<hex> holding an
// image index of the subject's referrers, which Publish updates. Registry
// access goes through a Registry (the fetcher satisfies it).
//
// List, Show, Push and Remove are the logic of `lazysnap profile`.
//
// # Errors
//
// ErrInvalid: a profile, manifest or index that breaks the format;
// ErrTooLarge: over a cap; ErrNotFound: no profile for the key (locally,
// or in the registry). The registry's errors are wrapped as they are.
// The package does not log.
//
// # Concurrency
//
// A Store may be used concurrently (writes are atomic renames; the last
// writer of a key wins); a Recorder is safe for concurrent use (its Add
// is on the read path and cheap). Publish's update of the tag-schema
// index is a read-modify-write: two publishers of the same subject at the
// same moment may drop one another's entry (the referrers API has no such
// race).
package profile

import "errors"

var (
	// ErrInvalid: bytes that are not a valid profile, artifact or index.
	ErrInvalid = errors.New("profile: invalid")
	// ErrTooLarge: a profile, manifest or index over a cap.
	ErrTooLarge = errors.New("profile: too large")
	// ErrNotFound: no profile for the image.
	ErrNotFound = errors.New("profile: not found")
)
