package fetcher

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// TestResolveFetchTimeouts: Resolve and Fetch (manifests, configs, through
// containerd's resolver) bound each attempt by RequestTimeout, so a
// registry that stalls them is retried and then reported as ErrTimeout
// instead of holding the caller for as long as its context lasts; a
// normal answer still goes through, body and all.
func TestResolveFetchTimeouts(t *testing.T) {
	manifest := []byte(`{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a","size":2},"layers":[]}`)
	mdesc := ocispec.Descriptor{MediaType: ocispec.MediaTypeImageManifest, Digest: digest.FromBytes(manifest), Size: int64(len(manifest))}
	tests := []struct {
		name      string
		stall     string // "headers", "body" or "" (answer)
		op        func(ctx context.Context, f *Fetcher, ref string) error
		wantCalls int64
	}{
		{name: "resolve stalls before answering", stall: "headers", wantCalls: 2, op: func(ctx context.Context, f *Fetcher, ref string) error {
			_, _, err := f.Resolve(ctx, ref)
			return err
		}},
		{name: "resolve answered", wantCalls: 1, op: func(ctx context.Context, f *Fetcher, ref string) error {
			_, d, err := f.Resolve(ctx, ref)
			if err == nil && d.Digest != mdesc.Digest {
				t.Errorf("resolved %s, want %s", d.Digest, mdesc.Digest)
			}
			return err
		}},
		// containerd's fetcher sends its GET on the first Read: a stall
		// before the headers is met by the read, like one in the body
		{name: "fetch stalls before answering", stall: "headers", wantCalls: 1, op: readStalled(mdesc)},
		{name: "fetch body stalls", stall: "body", wantCalls: 1, op: readStalled(mdesc)},
		{name: "fetch answered", wantCalls: 1, op: func(ctx context.Context, f *Fetcher, ref string) error {
			rc, err := f.Fetch(ctx, ref, mdesc)
			if err != nil {
				return err
			}
			defer rc.Close()
			if b, err := io.ReadAll(rc); err != nil || string(b) != string(manifest) {
				t.Errorf("read %q, %v", b, err)
			}
			return nil
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var calls atomic.Int64
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if !strings.Contains(r.URL.Path, "/manifests/") {
					w.WriteHeader(http.StatusOK)
					return
				}
				calls.Add(1)
				if tc.stall == "headers" {
					<-r.Context().Done()
					return
				}
				w.Header().Set("Content-Type", mdesc.MediaType)
				w.Header().Set("Docker-Content-Digest", mdesc.Digest.String())
				w.Header().Set("Content-Length", strconv.Itoa(len(manifest)))
				if r.Method == http.MethodHead {
					return
				}
				if tc.stall == "body" {
					w.Write(manifest[:10])
					w.(http.Flusher).Flush()
					<-r.Context().Done()
					return
				}
				w.Write(manifest)
			}))
			defer srv.Close()
			f := newTestFetcher(t, Config{Retries: 1, RequestTimeout: 150 * time.Millisecond})
			ref := strings.TrimPrefix(srv.URL, "http://") + "/test/repo:latest"
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			err := tc.op(ctx, f, ref)
			switch {
			case tc.stall == "" && err != nil:
				t.Fatalf("err = %v", err)
			case tc.stall != "" && !errors.Is(err, ErrTimeout):
				t.Fatalf("err = %v, want ErrTimeout", err)
			}
			if ctx.Err() != nil {
				t.Fatal("waited for the caller's deadline")
			}
			if got := calls.Load(); got < tc.wantCalls {
				t.Errorf("%d manifest requests, want at least %d", got, tc.wantCalls)
			}
		})
	}
}

// readStalled fetches desc and reads it: the read must fail (the attempt's
// deadline), not hang; it then reports ErrTimeout for the table's check.
func readStalled(desc ocispec.Descriptor) func(ctx context.Context, f *Fetcher, ref string) error {
	return func(ctx context.Context, f *Fetcher, ref string) error {
		rc, err := f.Fetch(ctx, ref, desc)
		if err != nil {
			return err
		}
		defer rc.Close()
		if b, err := io.ReadAll(rc); err == nil {
			return fmt.Errorf("read a stalled manifest to the end: %q", b)
		}
		return ErrTimeout
	}
}
