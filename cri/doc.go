// Package cri is lazysnap's CRI image service: a runtime.v1.ImageService
// (k8s.io/cri-api) that kubelet talks to (its --image-service-endpoint)
// and that forwards every call to containerd's CRI socket, keeping the
// auth of each PullImage for lazysnap's lazy fetches of that image's
// layers.
//
// # Concepts
//
// Kubernetes hands registry credentials (image pull secrets, credential
// provider plugins) to the runtime only in the PullImage call, not in any
// file lazysnap could read. containerd pulls with them, but the layers it
// asks lazysnap to mount are fetched by lazysnap, later and lazily, for as
// long as the containers run. So Proxy.PullImage hands the call's auth to
// an AuthStore (the fetching process's memory: fetcher.PullAuths, as
// LocalAuths, or through the fuse manager protocol when a manager fetches) before forwarding the
// call: the layers containerd mounts during the pull are fetched with it.
// The auth replaces the image repository's previous one (an anonymous pull
// replaces it with none); when containerd fails the pull (a wrong secret,
// say) the replacement is reverted, so that nothing of a failed pull is
// kept. Auths are never written to disk or logs, and die with the process.
//
// Every other call (ListImages, StreamImages, ImageStatus, RemoveImage,
// ImageFsInfo) is forwarded as it is; a call containerd does not implement
// fails as it fails there. kubelet keeps talking to containerd directly
// for the runtime service.
//
// # Errors
//
// Forwarded calls return containerd's gRPC status unchanged. Failing to
// keep the auth does not fail the pull (containerd can still pull;
// lazysnap's mounts fall back to ordinary pulls without credentials): it
// is reported to Options.OnAuthError.
//
// # Concurrency
//
// A Proxy serves concurrent calls; concurrent pulls of one repository
// each replace the auth, and a failed one reverts only its own.
package cri
