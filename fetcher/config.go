package fetcher

import (
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"time"
)

// Config configures a Fetcher. The zero value of every field selects the
// documented default.
type Config struct {
	// HostsDir is a containerd hosts directory (the layout of
	// /etc/containerd/certs.d: <dir>/<host[:port]>/hosts.toml with server,
	// mirrors, ca, client, skip_verify, plain-HTTP hosts). "" uses
	// containerd's defaults (HTTPS, docker.io -> registry-1.docker.io,
	// localhost with a port tries HTTP).
	HostsDir string
	// DockerConfigPath is a Docker config.json whose "auths",
	// "credHelpers" and "credsStore" provide registry credentials. It is
	// read on each authentication, so logins take effect without restart.
	// "" means no credentials; see DefaultDockerConfigPath.
	DockerConfigPath string
	// Credentials are asked for registry credentials, in order, before the
	// Docker config: such as the credentials of CRI pulls (PullAuths) and
	// kubelet credential provider plugins. See CredentialSource.
	Credentials []CredentialSource

	// CacheDir is the on-disk chunk cache directory. "" disables the disk
	// cache. Only one Fetcher (process) may use a directory at a time.
	CacheDir string
	// CacheMaxBytes caps the disk cache payload (default 10 GiB).
	CacheMaxBytes int64
	// MemCacheMaxBytes caps the in-memory cache of small chunks (default
	// 64 MiB; negative disables it). Chunks larger than 1/16 of it (at most
	// 1 MiB) are not kept in memory.
	MemCacheMaxBytes int64

	// WrapTransport, if set, wraps each registry client's HTTP transport
	// (the composable RoundTripper style): the wrapper sees every request
	// the fetcher sends (token and redirect hops included), after the
	// per-host concurrency limit, so that what it measures is the
	// registry's time, not the wait for a slot. ops.Metrics's
	// RegistryTransport times requests by host and status this way.
	WrapTransport func(http.RoundTripper) http.RoundTripper

	// MaxConnsPerHost limits concurrent requests per registry (or blob
	// storage) host (default 8).
	MaxConnsPerHost int
	// RequestTimeout bounds one attempt of a bounded read (ReadRange,
	// ReadRanges, ReadAt, finding a blob's size or tail: at most MaxSpan
	// per span), from sending the request to the end of the body (default
	// 60s). For StreamRange it bounds only the wait for the response
	// headers (auth and redirects included), so that a long stream that
	// keeps receiving is not cut off; with StallTimeout disabled it bounds
	// a stream's attempts as a whole too.
	RequestTimeout time.Duration
	// StallTimeout fails an attempt whose response body, once the headers
	// have come, delivers no byte for this long: a connection that stalls
	// mid-body. The attempt ends with ErrTimeout and is retried like any
	// timeout (a stream resumes after the bytes it has). The wait for the
	// headers is RequestTimeout's, not this: a registry may take its time
	// to answer (a pull-through cache filling itself) and still be sound.
	// Default 15s; negative disables it.
	StallTimeout time.Duration
	// Retries is the number of retries after a failed attempt on one host
	// (default 3; negative means none). For StreamRange they are counted
	// since the last attempt that received bytes: an attempt that made
	// progress before failing does not use up the budget.
	Retries int
	// RetryBaseDelay is the first backoff delay; it doubles per retry up
	// to 5s, with full jitter (default 100ms).
	RetryBaseDelay time.Duration

	// CoalesceGap merges missing ranges of one ReadRanges call whose gap is
	// at most this many bytes into one span (default 32 KiB; negative
	// disables merging).
	CoalesceGap int64
	// MaxSpan bounds a merged span (default 4 MiB).
	MaxSpan int64
	// MaxRangesPerRequest is the largest number of spans in one multi-range
	// request (default 32). 1 disables multi-range requests.
	MaxRangesPerRequest int
	// MaxDiscard is how many bytes before the wanted range the fetcher
	// reads and discards when a server ignores a single Range header and
	// sends the whole blob with 200 (default 64 MiB); beyond it the read
	// fails with ErrBadResponse.
	MaxDiscard int64
}

func (c Config) withDefaults() (Config, error) {
	if c.CacheMaxBytes == 0 {
		c.CacheMaxBytes = 10 << 30
	}
	if c.MemCacheMaxBytes == 0 {
		c.MemCacheMaxBytes = 64 << 20
	}
	if c.MaxConnsPerHost <= 0 {
		c.MaxConnsPerHost = 8
	}
	if c.RequestTimeout <= 0 {
		c.RequestTimeout = 60 * time.Second
	}
	if c.StallTimeout == 0 {
		c.StallTimeout = 15 * time.Second
	} else if c.StallTimeout < 0 {
		c.StallTimeout = -1
	}
	if c.Retries == 0 {
		c.Retries = 3
	} else if c.Retries < 0 {
		c.Retries = 0
	}
	if c.RetryBaseDelay <= 0 {
		c.RetryBaseDelay = 100 * time.Millisecond
	}
	if c.CoalesceGap == 0 {
		c.CoalesceGap = 32 << 10
	} else if c.CoalesceGap < 0 {
		c.CoalesceGap = -1
	}
	if c.MaxSpan <= 0 {
		c.MaxSpan = 4 << 20
	}
	if c.MaxRangesPerRequest <= 0 {
		c.MaxRangesPerRequest = 32
	}
	if c.MaxDiscard <= 0 {
		c.MaxDiscard = 64 << 20
	}
	if c.CacheMaxBytes < 0 {
		return c, fmt.Errorf("%w: CacheMaxBytes %d", ErrInvalid, c.CacheMaxBytes)
	}
	return c, nil
}

// DefaultDockerConfigPath is where the docker CLI keeps its config:
// $DOCKER_CONFIG/config.json, else ~/.docker/config.json.
func DefaultDockerConfigPath() string {
	if d := os.Getenv("DOCKER_CONFIG"); d != "" {
		return filepath.Join(d, "config.json")
	}
	home, err := os.UserHomeDir()
	if err != nil {
		return ""
	}
	return filepath.Join(home, ".docker", "config.json")
}
