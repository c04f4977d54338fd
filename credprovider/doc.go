// Package credprovider runs kubelet credential provider plugins
// (credentialprovider.kubelet.k8s.io/v1, the exec protocol of kubelet's
// --image-credential-provider-config and --image-credential-provider-bin-dir)
// to find registry credentials, configured with the same file kubelet
// reads, so that a node's lazy fetches use the credentials kubelet's own
// pulls use: on EKS, GKE and AKS the registry credentials of a node come
// from such a plugin.
//
// # Concepts
//
// A Config (CredentialProviderConfig, kubelet.config.k8s.io/v1, YAML or
// JSON) lists providers: the plugin's name (an executable in the bin
// directory), matchImages (globs on the registry host's DNS labels, a
// port that must be equal, a path that must be a prefix of the image's),
// defaultCacheDuration, the protocol apiVersion, args and env. For an
// image, Providers asks the providers whose matchImages match it, in the
// order of the file, and takes the first credential whose key in the
// plugin's answer matches the image (the most specific key first, as
// kubelet's keyring orders them). Credentials are given only for requests
// to the image's own registry, never to mirrors or redirect targets.
//
// A plugin's answer is cached in memory per its cacheKeyType (Image,
// Registry or Global) for its cacheDuration, else the provider's
// defaultCacheDuration; a duration of 0 is not cached. A refresh (the
// registry refused the credentials) runs the plugin again whatever the
// cache says. Providers that need service account tokens
// (tokenAttributes) are refused: lazysnap has no pod to ask a token for.
//
// # Errors
//
// Load fails on a malformed or invalid config and on a plugin missing from
// the bin directory. A plugin that fails, times out (PluginTimeout) or
// answers malformed JSON or the wrong apiVersion or kind fails the lookup
// with an error wrapping ErrPlugin, with the plugin's stderr (trimmed); the
// credentials in its output are never part of an error. The failure
// answers the image's lookups for FailureBackoff without running the
// plugin again (lookups happen per registry request), unless refreshed.
//
// # Concurrency
//
// Providers is safe for concurrent use; concurrent lookups of one image
// share one plugin run.
package credprovider
