// Package fetcher turns (image reference, layer descriptor) into a
// verified, cached reader of byte ranges of that blob, for lazily pulled
// eStargz layers.
//
// # Concepts
//
// A Fetcher holds the registry configuration, the connection pools and the
// caches; one per process. Registry access goes through containerd's
// resolver stack (remotes/docker): hosts come from a containerd hosts
// directory (hosts.toml: server, mirrors tried first, ca, client
// certificates, skip_verify, plain-HTTP hosts) and authentication is
// containerd's authorizer (basic and bearer token).
//
// Credentials come from a chain of CredentialSources, asked in order
// before every request, for the image reference the request is made for
// and the host it goes to: Config.Credentials (the auths of CRI pulls,
// PullAuths, per image repository; kubelet credential provider plugins),
// then the Docker config file (auths, credHelpers, credsStore; answered
// from memory while the file is unchanged). Each host keeps one
// containerd authorizer, with its token cache, per distinct credential,
// so that rotated credentials are used by the next request and images
// that share credentials share tokens. When the registry refuses the
// credentials a request carried, or its token server refuses them, the
// sources are asked once more with refresh set (bypassing their caches)
// and the request is retried with what they give, if that differs; then
// it fails with ErrUnauthorized. A source that fails (a broken credential
// helper) does not fail requests that need no credentials: they go
// anonymously, and its error is the request's only when the registry asks
// for credentials; its failure is not retried for FailureBackoff. Resolve and Fetch
// (whole manifests/configs, digest-verified) use containerd's resolver and
// fetcher as they are.
//
// A Blob is one blob of one repository. Its ranged reads (ReadRange,
// ReadRanges) use the same hosts, clients and authorizers but build the
// HTTP requests here, because containerd's fetcher only reads from an
// offset to the end: single and multi-range GETs, with the status (206) and
// every Content-Range checked against what was asked. Servers that ignore
// or reject multi-range requests (200 or 416) are remembered per host and
// get single-range requests. A single-range request answered with the
// whole blob (200) is accepted only when the body length is the blob size;
// the range is cut out of it. Redirects to blob storage are followed, the
// target is remembered per blob and host, and a target that has expired
// (400/401/403/404/410) is re-resolved through the registry transparently.
// A mirror (a host before the last) that is unreachable or times out is
// not retried: the read moves on to the next host, and the mirror is passed
// over for mirrorRest before it is tried again.
// BlobWithTail opens a blob whose size the descriptor does not give with
// one suffix-range request ("bytes=-n"), which returns the size and the
// blob's last bytes (an eStargz footer and TOC) at once, instead of a HEAD
// and then a range read; servers that do not do suffix ranges get those.
// StreamRange hands a range to the caller while it arrives (a retry
// resumes after the bytes already handed over), for large prefetch spans
// whose first chunks are wanted before the last. CopyTo writes a whole
// blob in order from the ranges the caches hold, fetching only the gaps
// (MaxSpan at a time, not cached), for checking a complete layer against
// its digest without fetching it again.
//
// # Transports
//
// A Blob's requests go through a stack of http.RoundTrippers
// (newBlobTransport, transport.go), each one concern in its own file,
// outermost first:
//
//   - mirrorTransport (transport_mirror.go): the blob's pull hosts in the
//     order of hosts.toml, mirrors first, each at its own address, API
//     path and headers (a mirror with containerd's "ns" parameter), each
//     through its own stack below (its own authorizer, so credentials and
//     tokens stay scoped to their host). A host's failure sends the
//     request on; the first host's error is returned when all fail. A
//     mirror that is unreachable or times out gets one attempt and is
//     passed over for mirrorRest.
//   - retryTransport (transport_retry.go): the attempts on one host: the
//     host's slot and the attempt's bounds (startAttempt), transient
//     failures retried with backoff (Retry-After honoured up to
//     maxRetryAfter) for replayable requests (GET, HEAD, PUT with a body
//     req.GetBody gives again). An operation reads its responses as a
//     consumer carried by the request (withConsumer), inside the attempt,
//     so that a short body or a wrong Content-Range is retried like a
//     reset; a stream's consumer reports what it received, and the next
//     attempt asks for the rest of its Range.
//   - locationTransport (transport_location.go): the redirect target
//     (pre-signed storage URL) a successful request was sent to is
//     remembered and used directly; one that has expired is forgotten and
//     the request goes to the registry again. Above the redirects,
//     because it must see where the whole redirect chain ended.
//   - redirectTransport: follows redirects (at most 10), so that every
//     hop goes through the layers below.
//   - stallTransport (transport_stall.go): the attempt's watchdog, from
//     the request context: the wait for headers, then the body going
//     quiet. Above auth, so that a token fetch counts as waiting for
//     headers.
//   - authTransport (transport_auth.go): the host's credentials on every
//     hop; a 401 is handed to the authorizer and the request sent again
//     (at most three times); a request to a remembered target passes its
//     401 up (it means expired, not a challenge).
//   - meteredTransport (transport_meter.go): the per-host concurrency
//     limit and the request and byte counters, then Config.WrapTransport,
//     then containerd's transport. These are the host client's own
//     transport, shared with containerd's resolver (Resolve, Fetch), which
//     authorizes on its own; WrapTransport sits under the limiter, so the
//     time it measures excludes the wait for a slot.
//
// Each operation (a range read, a stream, a size, a tail) is one request
// through this stack, Blob.do, with its consumer. Resolve, Fetch and Push
// go through containerd's resolver, which walks the hosts itself and
// reads what it asks for: Fetcher.retry (retry.go) retries such a call as
// a whole, with the same policy (retryable, backoff).
//
// Cache: ranges are cached per (blob digest, offset, length), on disk under
// Config.CacheDir as <alg>/<hex[:2]>/<hex>/<off>-<len>, so entries are
// shared by every reference and image that uses the same layer, and survive
// restarts (the index and LRU order are rebuilt from the directory on New).
// Files are written to a temporary name and renamed; each carries a CRC-32C
// trailer, and a truncated or corrupt file is detected on read, dropped and
// refetched. One Fetcher owns a cache directory at a time. The disk cache
// is capped (Config.CacheMaxBytes) with LRU eviction; small chunks are also
// kept in a memory LRU. Cached bytes are raw blob bytes: their content
// (e.g. eStargz chunk digests) is verified by the caller, who calls
// Blob.Invalidate when a check fails and reads again. Blob.ReadAt
// (io.ReaderAt) bypasses the caches.
//
// Observability: Stats, ErrorStats and CacheUsage are counters read on
// demand (package ops turns them into metrics at scrape time);
// Config.WrapTransport wraps each registry client's transport (after the
// per-host limiter), which is how ops times each request without this
// package knowing of Prometheus.
//
// # Errors
//
// Functions return errors wrapping one of the sentinels (ErrNotFound,
// ErrUnauthorized, ErrRangeNotSatisfied, ErrBadResponse, ErrUnavailable,
// ErrTimeout, ErrDigestMismatch, ErrInvalid; test with
// errors.Is), usually as a *RequestError carrying the operation, host,
// digest, range, HTTP status and number of attempts. When the caller's
// context ends, its error (context.Canceled or DeadlineExceeded) is
// returned. Transient failures (connection errors and resets, short
// bodies, timeouts and stalls, 5xx, 408, 429, responses not matching the
// request) are retried Config.Retries times per host with exponential
// backoff and jitter (or the server's Retry-After, when longer, up to
// 10s), then the next configured host is tried. A response whose status,
// Content-Range, length or blob size does not match the request is never
// used. Bytes with correct framing but wrong content cannot be recognised
// here: the caller's content check catches them (Invalidate and read
// again), so they are not served twice. The package
// does not log.
//
// # Concurrency
//
// Fetcher and Blob are safe for concurrent use. Every blocking call takes
// a context first. Requests per host are limited to Config.MaxConnsPerHost.
// Concurrent reads of the same uncached range share one fetch: the fetch
// runs under a context detached from the callers, so a caller that gives
// up returns at once with its context's error while the others keep
// waiting; the fetch is cancelled only when every caller waiting on it has
// gone.
//
// # Timeouts
//
// An attempt of a bounded read (ReadRange, ReadRanges, ReadAt, a blob's
// size or tail; spans of at most Config.MaxSpan) is bounded as a whole by
// Config.RequestTimeout. A StreamRange attempt, which may legitimately take
// longer on a slow link, is bounded by RequestTimeout only until the
// response headers arrive. Any attempt fails once its response body goes
// quiet, no byte for Config.StallTimeout, so that a connection that stalls
// mid-body is given up after seconds, not after the request timeout; the
// wait for headers is left to RequestTimeout. An attempt cut short by these
// bounds fails with ErrTimeout and is retried: a stream resumes after the
// bytes it has, and for streams only attempts that received nothing count
// against Config.Retries, so a slow stream that keeps moving is not failed
// by its retry budget. Resolve and Fetch (manifests, indexes, configs,
// through containerd's resolver) bound each attempt, body included, by
// RequestTimeout as well; a stalled Resolve is retried, a Fetch whose body
// stalls fails its reads. The caller's context cancels at any time.
package fetcher
