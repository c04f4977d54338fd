package remote

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/lazysnap/lazysnap/fetcher"
	"github.com/lazysnap/lazysnap/fs/fetch"
	"github.com/lazysnap/lazysnap/layer"
	"github.com/opencontainers/go-digest"
)

// BlobChecker is a layer format's Decoder that checks a complete layer
// beyond its chunks (layer.BlobChecker). An error marks the layer bad with
// the error as the reason, unless the blob failed its digest too (then
// that is the reason) or could not be read (then nothing is decided).
type BlobChecker = layer.BlobChecker

// Verification states (LayerInfo.Verification).
const (
	VerifyPending   = "pending"   // waiting for every chunk to be present
	VerifyRunning   = "verifying" // reading the blob
	VerifyVerified  = "verified"  // the blob matches its digest (and its format's check)
	verifyBadPrefix = "bad: "     // then the reason
	verifyErrPrefix = "unverified: "
)

// BadLayer is a layer marked bad by verification: new Mounts of it are
// refused (snapshotter.ReasonVerification), so that the snapshotter pulls
// it the ordinary way. Each mark is a JSON file under
// Options.Root/verify/bad, kept across restarts; removing it clears it.
type BadLayer struct {
	Digest digest.Digest `json:"digest"`
	// Index, when set, limits the mark to Mounts with that index: the
	// blob matched its digest, but not this index (the format's
	// BlobChecker failed), and the blob may still be mounted with another.
	// Empty, the blob itself is not the one its digest names, and every
	// Mount of it is refused.
	Index  digest.Digest `json:"index,omitempty"`
	Reason string        `json:"reason"`
	Time   time.Time     `json:"time"`
}

// VerifyStats count the blob verifications of an FS since it started.
type VerifyStats struct {
	Verified, Bad, Errors int64 // verifications by outcome
	// CachedBytes and FetchedBytes: where the verified bytes came from,
	// the chunk cache or the registry (the gaps the cache did not hold).
	CachedBytes, FetchedBytes int64
}

// verifier checks complete layers against their blob digests, one
// verification per layer at a time however many mounts it has, and keeps
// the bad marks.
type verifier struct {
	root string        // Options.Root
	sem  chan struct{} // verifications reading at once

	mu    sync.Mutex
	state map[layerKey]string
	runs  map[layerKey]chan struct{} // verifications running, closed when done

	verified, bad, errs, cachedBytes, fetchedBytes atomic.Int64
}

// maxVerifying bounds the verifications that read blobs at once: each
// holds one cached range or one fetched span in memory.
const maxVerifying = 2

func newVerifier(root string) *verifier {
	return &verifier{root: root, sem: make(chan struct{}, maxVerifying), state: map[layerKey]string{}, runs: map[layerKey]chan struct{}{}}
}

func (v *verifier) badDir() string { return filepath.Join(v.root, "verify", "bad") }

// badName is a mark's file name: <blob>.json for the blob's, or
// <blob>.<index>.json for one index's (algorithm-hex each).
func badName(blob, index digest.Digest) string {
	if index == "" {
		return blob.Algorithm().String() + "-" + blob.Encoded() + ".json"
	}
	return layerKey{blob: blob, index: index}.contentName() + ".json"
}

// okPath marks a verified layer in its content directory, so that Cleanup
// removes the mark with the content.
func (v *verifier) okPath(k layerKey) string {
	return filepath.Join(v.root, "content", k.contentName(), "verified")
}

// badMark returns the mark that refuses a Mount of k: the blob's, or its
// index's.
func (v *verifier) badMark(k layerKey) (BadLayer, bool) {
	for _, index := range []digest.Digest{"", k.index} {
		if bl, ok := readMark(filepath.Join(v.badDir(), badName(k.blob, index)), k.blob, index); ok {
			return bl, true
		}
	}
	return BadLayer{}, false
}

// readMark reads the mark at p, written for blob and index.
func readMark(p string, blob, index digest.Digest) (BadLayer, bool) {
	b, err := os.ReadFile(p)
	if err != nil {
		return BadLayer{}, false
	}
	var bl BadLayer
	if json.Unmarshal(b, &bl) != nil || bl.Digest != blob || bl.Index != index {
		// a damaged mark still marks what its name says
		bl = BadLayer{Digest: blob, Index: index, Reason: "marked bad (unreadable mark " + p + ")"}
	}
	return bl, true
}

// markBad records a bad layer under root, atomically.
func (v *verifier) markBad(bl BadLayer) error {
	p := filepath.Join(v.badDir(), badName(bl.Digest, bl.Index))
	if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
		return err
	}
	b, _ := json.Marshal(bl)
	tmp := p + ".tmp"
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, p)
}

// badLayers lists the marks, by digest and index.
func (v *verifier) badLayers() []BadLayer {
	ents, _ := os.ReadDir(v.badDir())
	var out []BadLayer
	for _, e := range ents {
		name, ok := strings.CutSuffix(e.Name(), ".json")
		if !ok {
			continue
		}
		var ds []digest.Digest
		for _, part := range strings.Split(name, ".") {
			alg, hex, _ := strings.Cut(part, "-")
			ds = append(ds, digest.NewDigestFromEncoded(digest.Algorithm(alg), hex))
		}
		if len(ds) == 1 {
			ds = append(ds, "")
		}
		if len(ds) != 2 || ds[0].Validate() != nil || ds[1] != "" && ds[1].Validate() != nil {
			continue
		}
		if bl, ok := readMark(filepath.Join(v.badDir(), e.Name()), ds[0], ds[1]); ok {
			out = append(out, bl)
		}
	}
	slices.SortFunc(out, func(a, b BadLayer) int {
		return cmp.Or(strings.Compare(a.Digest.String(), b.Digest.String()), strings.Compare(a.Index.String(), b.Index.String()))
	})
	return out
}

// stateOf is k's verification state ("" when none has been asked for).
func (v *verifier) stateOf(k layerKey) string {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.state[k]
}

func (v *verifier) setState(k layerKey, s string) {
	v.mu.Lock()
	v.state[k] = s
	v.mu.Unlock()
}

// forget drops k's state once no mount of it is left.
func (v *verifier) forget(k layerKey) {
	v.mu.Lock()
	delete(v.state, k)
	v.mu.Unlock()
}

func (v *verifier) stats() VerifyStats {
	return VerifyStats{Verified: v.verified.Load(), Bad: v.bad.Load(), Errors: v.errs.Load(),
		CachedBytes: v.cachedBytes.Load(), FetchedBytes: v.fetchedBytes.Load()}
}

// verifyRetry is the first wait before a verification that could not read
// the blob is tried again; it doubles up to verifyRetryMax.
const (
	verifyRetry    = 10 * time.Second
	verifyRetryMax = 10 * time.Minute
)

// watch verifies layer k (mounted as l over b, decoded by dec) once it is
// complete, unless another mount of it already has (or is doing so: then
// it waits for that one's outcome). A verification that could not read
// the blob is retried with a backoff. It returns when done or ctx ends
// (Unmount).
func (v *verifier) watch(ctx context.Context, k layerKey, l *fetch.Layer, b Blob, dec fetch.Decoder) {
	v.mu.Lock()
	if v.state[k] == "" {
		v.state[k] = VerifyPending
	}
	v.mu.Unlock()
	if _, err := os.Stat(v.okPath(k)); err == nil {
		v.setState(k, VerifyVerified)
		if t, ok := dec.(layer.Truster); ok {
			t.Trust()
		}
		return
	}
	select {
	case <-l.Complete():
	case <-ctx.Done():
		return
	}
	for wait := verifyRetry; ; wait = min(2*wait, verifyRetryMax) {
		if !v.verifyOnce(ctx, k, b, dec) {
			return
		}
		select {
		case <-time.After(wait):
		case <-ctx.Done():
			return
		}
	}
}

// verifyOnce verifies k unless it is decided; it reports whether to try
// again (the blob could not be read).
func (v *verifier) verifyOnce(ctx context.Context, k layerKey, b Blob, dec fetch.Decoder) (again bool) {
	for {
		v.mu.Lock()
		s, run := v.state[k], v.runs[k]
		if s == VerifyVerified || isBad(s) {
			v.mu.Unlock()
			return false
		}
		if run != nil { // another mount's: its outcome is ours
			v.mu.Unlock()
			select {
			case <-run:
				continue
			case <-ctx.Done():
				return false
			}
		}
		run = make(chan struct{})
		v.runs[k], v.state[k] = run, VerifyRunning
		v.mu.Unlock()
		state := v.verify(ctx, k, b, dec)
		v.mu.Lock()
		delete(v.runs, k)
		if !isBad(v.state[k]) { // a panic or markIndexBad may have come first
			v.state[k] = state
		}
		v.mu.Unlock()
		close(run)
		return ctx.Err() == nil && state != VerifyVerified && !isBad(state)
	}
}

func isBad(state string) bool { return strings.HasPrefix(state, verifyBadPrefix) }

// verify reads the blob and returns k's new state, marking it bad or
// verified on disk.
func (v *verifier) verify(ctx context.Context, k layerKey, b Blob, dec fetch.Decoder) string {
	select {
	case v.sem <- struct{}{}:
	case <-ctx.Done():
		return VerifyPending
	}
	defer func() { <-v.sem }()
	reason, blobBad, err := v.check(ctx, k, b, dec)
	switch {
	case ctx.Err() != nil:
		return VerifyPending // unmounted: nothing decided
	case err != nil:
		v.errs.Add(1)
		return verifyErrPrefix + err.Error()
	case reason != "":
		v.bad.Add(1)
		bl := BadLayer{Digest: k.blob, Reason: reason, Time: time.Now().UTC()}
		if !blobBad {
			bl.Index = k.index
		}
		if err := v.markBad(bl); err != nil {
			reason += fmt.Sprintf(" (the mark could not be stored: %v)", err)
		}
		return verifyBadPrefix + reason
	}
	v.verified.Add(1)
	_ = os.WriteFile(v.okPath(k), nil, 0o600) // without it, the next Mount verifies again
	if t, ok := dec.(layer.Truster); ok {
		t.Trust()
	}
	return VerifyVerified
}

// check reads the whole blob, from the chunk cache where it can, and
// returns why the layer is bad ("" when it is not) and whether that is
// the blob's fault (its digest) rather than its index's (the format's
// check), or the error that kept it from being read. A digest that does
// not match is confirmed from the registry alone, with the cached ranges
// dropped (they may be what is wrong), before the blob is called bad.
func (v *verifier) check(ctx context.Context, k layerKey, b Blob, dec fetch.Decoder) (reason string, blobBad bool, err error) {
	if !k.blob.Algorithm().Available() {
		return "", false, fmt.Errorf("digest algorithm %s is not available", k.blob.Algorithm())
	}
	got, chkErr, err := v.pass(ctx, k.blob, b, dec, true)
	if err != nil {
		return "", false, err
	}
	if got != k.blob {
		if inv, ok := b.(fetch.Invalidator); ok {
			inv.Invalidate(0, b.Size())
		}
		if got, chkErr, err = v.pass(ctx, k.blob, b, dec, false); err != nil {
			return "", false, err
		}
	}
	switch {
	case got != k.blob:
		return fmt.Sprintf("the registry serves a blob whose digest is %s, not %s (the files served from it matched the index %s)", got, k.blob, k.index), true, nil
	case errors.Is(chkErr, fetch.ErrPanic):
		return chkErr.Error(), false, nil
	case chkErr != nil:
		return fmt.Sprintf("the layer does not match its index %s: %v", k.index, chkErr), false, nil
	}
	return "", false, nil
}

// blobCopier is a Blob that writes itself out from the chunk cache where
// it can (fetcher.Blob.CopyTo).
type blobCopier interface {
	CopyTo(ctx context.Context, w io.Writer, cached bool) (fetcher.CopyStats, error)
}

var _ blobCopier = (*tailBlob)(nil)

// pass reads the blob once, in order, into the digest and dec's
// BlobChecker, if it has one, and returns the digest and the check's
// error.
func (v *verifier) pass(ctx context.Context, want digest.Digest, b Blob, dec fetch.Decoder, cached bool) (digest.Digest, error, error) {
	dg := want.Algorithm().Digester()
	var (
		w       io.Writer = dg.Hash()
		pw      *io.PipeWriter
		chkErr  error
		chkDone chan struct{}
	)
	if chk, ok := dec.(BlobChecker); ok {
		var pr *io.PipeReader
		pr, pw = io.Pipe()
		chkDone = make(chan struct{})
		go func() {
			defer close(chkDone)
			chkErr = checkBlob(ctx, want, chk, pr)
			pr.CloseWithError(errCheckDone)
		}()
		w = io.MultiWriter(w, lenientWriter{pw})
	}
	var (
		st  fetcher.CopyStats
		err error
	)
	if c, ok := b.(blobCopier); ok {
		st, err = c.CopyTo(ctx, w, cached)
	} else {
		st.Fetched, err = io.CopyBuffer(w, io.NewSectionReader(b, 0, b.Size()), make([]byte, 1<<20))
	}
	v.cachedBytes.Add(st.Cached)
	v.fetchedBytes.Add(st.Fetched)
	if pw != nil {
		pw.CloseWithError(err) // nil: the checker reads io.EOF
		<-chkDone
	}
	if err != nil {
		return "", nil, err
	}
	return dg.Digest(), chkErr, nil
}

// checkBlob runs chk over blob, a panic of it contained (then the
// error is an fetch.PanicError).
func checkBlob(ctx context.Context, blob digest.Digest, chk BlobChecker, r io.Reader) (err error) {
	defer contain(blob.String(), nil, &err)
	return chk.CheckBlob(ctx, r)
}

// markIndexBad marks k's index bad for a reason found while serving it
// (a SOCI zTOC entry its tar header contradicts), as a failed BlobChecker
// would: new Mounts with that index are refused.
func (v *verifier) markIndexBad(k layerKey, reason string) {
	v.mu.Lock()
	if isBad(v.state[k]) {
		v.mu.Unlock()
		return
	}
	v.state[k] = verifyBadPrefix + reason
	v.mu.Unlock()
	v.bad.Add(1)
	if err := v.markBad(BadLayer{Digest: k.blob, Index: k.index, Reason: reason, Time: time.Now().UTC()}); err != nil {
		v.setState(k, verifyBadPrefix+reason+fmt.Sprintf(" (the mark could not be stored: %v)", err))
	}
}

// errCheckDone: the BlobChecker returned before reading the whole blob.
var errCheckDone = errors.New("remote: blob check done")

// lenientWriter passes writes to a checker's pipe and drops them once the
// checker has stopped reading, so that the digest still sees every byte.
type lenientWriter struct{ w io.Writer }

func (l lenientWriter) Write(p []byte) (int, error) {
	_, _ = l.w.Write(p)
	return len(p), nil
}
