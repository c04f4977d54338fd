package fetcher

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"path"
	"sort"
	"strings"
	"sync"

	"github.com/containerd/containerd/v2/core/remotes/docker"
	"github.com/containerd/containerd/v2/pkg/reference"
	"github.com/lazysnap/lazysnap/internal/descriptor"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// Range is a byte range [Off, Off+Len) of a blob.
type Range struct{ Off, Len int64 }

// End is Off+Len.
func (r Range) End() int64 { return r.Off + r.Len }

func (r Range) String() string { return fmt.Sprintf("bytes=%d-%d", r.Off, r.End()-1) }

// Blob is a registry blob (typically a compressed layer) read by byte
// ranges. It is safe for concurrent use.
type Blob struct {
	f       *Fetcher
	ref     string
	refHost string
	repo    string
	desc    ocispec.Descriptor
	size    int64
	hosts   []docker.RegistryHost // pull hosts, mirrors first
	url     string                // in the registry of ref: mirrorTransport routes it
	tr      http.RoundTripper     // newBlobTransport
}

// Blob returns a handle for the blob desc in the repository of ref (a
// reference such as "registry:5000/repo:tag"; only its host and repository
// are used). The size is desc.Size, or when that is 0 it is found with a
// HEAD request, falling back to a one-byte ranged GET.
func (f *Fetcher) Blob(ctx context.Context, ref string, desc ocispec.Descriptor) (*Blob, error) {
	b, err := f.newBlob(ref, desc)
	if err != nil {
		return nil, err
	}
	if b.size <= 0 {
		b.size, err = b.stat(b.scoped(ctx))
		if err != nil {
			return nil, err
		}
	}
	return b, nil
}

// hostsOf parses ref into its registry host and repository, and returns
// the configured hosts of that registry.
func (f *Fetcher) hostsOf(ref string) (refHost, repo string, hosts []docker.RegistryHost, err error) {
	spec, err := reference.Parse(ref)
	if err != nil {
		return "", "", nil, fmt.Errorf("%w: reference %q: %w", ErrInvalid, ref, err)
	}
	refHost = spec.Hostname()
	hosts, err = f.registryHosts(refHost)
	return refHost, strings.TrimPrefix(spec.Locator, refHost+"/"), hosts, err
}

// newBlob is Blob without finding an unknown size.
func (f *Fetcher) newBlob(ref string, desc ocispec.Descriptor) (*Blob, error) {
	if err := descriptor.Validate(desc); err != nil {
		return nil, fmt.Errorf("%w: blob: %w", ErrInvalid, err)
	}
	refHost, repo, all, err := f.hostsOf(ref)
	if err != nil {
		return nil, err
	}
	b := &Blob{
		f:       f,
		ref:     ref,
		refHost: refHost,
		repo:    repo,
		desc:    desc,
		size:    desc.Size,
	}
	for _, h := range all {
		if h.Capabilities.Has(docker.HostCapabilityPull) {
			b.hosts = append(b.hosts, h)
		}
	}
	if len(b.hosts) == 0 {
		return nil, fmt.Errorf("%w: no pull hosts configured for %s", ErrInvalid, refHost)
	}
	b.url = registryURL(refHost, path.Join(repo, "blobs", desc.Digest.String()))
	b.tr = f.newBlobTransport(b.hosts)
	return b, nil
}

// BlobWithTail is Blob plus the blob's last n bytes (all of it when it is
// smaller), read with a single request: when desc.Size is unknown, a
// suffix range ("bytes=-n") that answers the size too, instead of a HEAD
// followed by a range read. Opening a remote layer (footer and TOC) then
// costs one round trip. The tail is cached like a ReadRange of it.
func (f *Fetcher) BlobWithTail(ctx context.Context, ref string, desc ocispec.Descriptor, n int64) (*Blob, []byte, error) {
	if n <= 0 {
		return nil, nil, fmt.Errorf("%w: tail of %d bytes", ErrInvalid, n)
	}
	b, err := f.newBlob(ref, desc)
	if err != nil {
		return nil, nil, err
	}
	if b.size <= 0 {
		tail, err := b.readSuffix(b.scoped(ctx), n)
		if err == nil && tail != nil {
			return b, tail, nil
		}
		if err != nil && !errors.Is(err, errSuffixUnsupported) {
			return nil, nil, err
		}
		// a server that does not do suffix ranges: find the size, then
		// read the tail as any range
		if b.size <= 0 {
			if b.size, err = b.stat(b.scoped(ctx)); err != nil {
				return nil, nil, err
			}
		}
	}
	m := min(n, b.size)
	tail, err := b.ReadRange(ctx, b.size-m, m)
	if err != nil {
		return nil, nil, err
	}
	return b, tail, nil
}

// Size is the blob size in bytes.
func (b *Blob) Size() int64 { return b.size }

// Descriptor is the blob's descriptor (with the size filled in).
func (b *Blob) Descriptor() ocispec.Descriptor {
	d := b.desc
	d.Size = b.size
	return d
}

// scoped adds the repository pull scope (for bearer tokens) and silences
// containerd's logging.
func (b *Blob) scoped(ctx context.Context) context.Context {
	ctx = docker.WithScope(ctx, "repository:"+b.repo+":pull")
	return b.f.refCtx(ctx, b.ref)
}

func (b *Blob) key(r Range) chunkKey { return chunkKey{dgst: b.desc.Digest, off: r.Off, n: r.Len} }

func (b *Blob) check(r Range) error {
	if r.Off < 0 || r.Len <= 0 || r.End() > b.size {
		return &RequestError{Op: "read", Digest: b.desc.Digest.String(), Range: r.String(),
			Kind: ErrRangeNotSatisfied, Err: fmt.Errorf("blob size is %d", b.size)}
	}
	return nil
}

// ReadRange returns the n bytes at off, from the cache or the registry
// (then cached). Concurrent reads of the same uncached range share one
// request. The returned slice is the caller's.
func (b *Blob) ReadRange(ctx context.Context, off, n int64) ([]byte, error) {
	out, err := b.ReadRanges(ctx, []Range{{Off: off, Len: n}})
	if err != nil {
		return nil, err
	}
	return out[0], nil
}

// ReadRanges returns the bytes of each range (out[i] for rs[i]). Cached
// ranges are served from the cache; the others are merged when close
// (Config.CoalesceGap), fetched with multi-range requests of up to
// Config.MaxRangesPerRequest spans (single ranges where the server does not
// support that), verified against Content-Range and cached per requested
// range. Ranges in flight for another caller are waited for, not refetched.
func (b *Blob) ReadRanges(ctx context.Context, rs []Range) ([][]byte, error) {
	type slot struct {
		idx    []int
		data   []byte
		shared bool // data belongs to a flight: copy for every caller index
	}
	slots := map[chunkKey]*slot{}
	var order []chunkKey
	for i, r := range rs {
		if err := b.check(r); err != nil {
			return nil, err
		}
		k := b.key(r)
		s := slots[k]
		if s == nil {
			s = &slot{}
			slots[k] = s
			order = append(order, k)
		}
		s.idx = append(s.idx, i)
	}
	var missing []chunkKey
	for _, k := range order {
		if d, ok := b.f.cacheGet(k); ok {
			slots[k].data = d
		} else {
			missing = append(missing, k)
		}
	}
	if len(missing) > 0 {
		b.f.misses.Add(int64(len(missing)))
		fs, nb := b.f.flights.join(b.scoped(ctx), missing)
		if nb != nil {
			go b.runBatch(nb)
		}
		if err := b.f.flights.wait(ctx, fs); err != nil {
			return nil, err
		}
		for j, fl := range fs {
			if fl.err != nil {
				return nil, fl.err
			}
			slots[missing[j]].data, slots[missing[j]].shared = fl.data, true
		}
	}
	out := make([][]byte, len(rs))
	for _, k := range order {
		s := slots[k]
		for n, i := range s.idx {
			if n == 0 && !s.shared {
				out[i] = s.data
			} else {
				out[i] = append([]byte(nil), s.data...)
			}
		}
	}
	return out, nil
}

// Invalidate drops every cached range of this blob overlapping
// [off, off+n), so the next read refetches. Callers use it when their own
// verification (e.g. a chunk digest) fails.
func (b *Blob) Invalidate(off, n int64) {
	b.f.mem.drop(b.desc.Digest, off, n)
	b.f.disk.drop(b.desc.Digest, off, n)
}

// ReadAt implements io.ReaderAt for io.NewSectionReader. It is uncached and
// not deduplicated: each call is a ranged request (with retries), bounded
// by the configured timeouts rather than a caller context.
func (b *Blob) ReadAt(p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, fmt.Errorf("%w: negative offset %d", ErrInvalid, off)
	}
	if off >= b.size {
		return 0, io.EOF
	}
	if len(p) == 0 {
		return 0, nil
	}
	n := min(int64(len(p)), b.size-off)
	res, err := b.fetch(b.scoped(context.Background()), []Range{{off, n}})
	if err != nil {
		return 0, err
	}
	copy(p, res[0])
	if n < int64(len(p)) {
		return int(n), io.EOF
	}
	return int(n), nil
}

// runBatch fetches a batch's keys under the batch context, fills the cache
// and delivers the results.
func (b *Blob) runBatch(bt *batch) {
	data := make([][]byte, len(bt.keys))
	errs := make([]error, len(bt.keys))
	var todo []int
	for i, k := range bt.keys {
		// A batch that finished just before this one was created may have
		// filled the cache.
		if d, ok := b.f.cacheGet(k); ok {
			data[i] = d
			continue
		}
		todo = append(todo, i)
	}
	spans, members := b.plan(bt.keys, todo)
	groupSize := b.f.cfg.MaxRangesPerRequest
	var wg sync.WaitGroup
	for start := 0; start < len(spans); start += groupSize {
		end := min(start+groupSize, len(spans))
		wg.Add(1)
		go func(gs []Range, gm [][]int) {
			defer wg.Done()
			res, err := b.fetch(bt.ctx, gs)
			for s := range gs {
				for _, i := range gm[s] {
					if err != nil {
						errs[i] = err
						continue
					}
					k := bt.keys[i]
					d := res[s][k.off-gs[s].Off : k.end()-gs[s].Off]
					data[i] = d
					b.f.cachePut(k, d)
				}
			}
		}(spans[start:end], members[start:end])
	}
	wg.Wait()
	b.f.flights.finish(bt, data, errs)
}

// plan sorts the keys to fetch and merges them into spans: keys that
// overlap or lie within CoalesceGap of each other share a span, up to
// MaxSpan. members[s] lists the key indexes served by span s.
func (b *Blob) plan(keys []chunkKey, todo []int) (spans []Range, members [][]int) {
	sort.Slice(todo, func(i, j int) bool {
		ki, kj := keys[todo[i]], keys[todo[j]]
		return ki.off < kj.off || (ki.off == kj.off && ki.n < kj.n)
	})
	gap, maxSpan := b.f.cfg.CoalesceGap, b.f.cfg.MaxSpan
	for _, i := range todo {
		k := keys[i]
		if n := len(spans); n > 0 {
			cur := &spans[n-1]
			newEnd := max(cur.End(), k.end())
			if k.off <= cur.End()+max(gap, 0) && (newEnd-cur.Off <= maxSpan || k.off < cur.End()) {
				cur.Len = newEnd - cur.Off
				members[n-1] = append(members[n-1], i)
				continue
			}
		}
		spans = append(spans, Range{Off: k.off, Len: k.n})
		members = append(members, []int{i})
	}
	return spans, members
}
