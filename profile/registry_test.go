package profile

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/lazysnap/lazysnap/fetcher"
	"github.com/lazysnap/lazysnap/internal/testenv/registry"
	"github.com/opencontainers/go-digest"
	specs "github.com/opencontainers/image-spec/specs-go"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// referrersServer is a small OCI registry in memory with the referrers
// API: blobs (monolithic uploads), manifests by tag and digest, and
// GET /v2/<name>/referrers/<digest> built from the manifests' subjects.
type referrersServer struct {
	mu        sync.Mutex
	blobs     map[string][]byte
	manifests map[string][]byte // by digest
	types     map[string]string
	tags      map[string]string // tag → digest
	tagPuts   []string
	referrers int
}

func (s *referrersServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	defer s.mu.Unlock()
	p := strings.TrimPrefix(r.URL.Path, "/v2/")
	switch {
	case r.URL.Path == "/v2/":
		return
	case strings.Contains(p, "/blobs/uploads/") && r.Method == http.MethodPost:
		w.Header().Set("Location", "/v2/"+strings.SplitN(p, "/blobs/", 2)[0]+"/blobs/uploads/x")
		w.WriteHeader(http.StatusAccepted)
	case strings.Contains(p, "/blobs/uploads/") && r.Method == http.MethodPut:
		b, _ := io.ReadAll(r.Body)
		d := r.URL.Query().Get("digest")
		if digest.FromBytes(b).String() != d {
			http.Error(w, "digest", http.StatusBadRequest)
			return
		}
		s.blobs[d] = b
		w.WriteHeader(http.StatusCreated)
	case strings.Contains(p, "/blobs/"):
		b, ok := s.blobs[p[strings.LastIndex(p, "/")+1:]]
		if !ok {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Docker-Content-Digest", digest.FromBytes(b).String())
		w.Write(b)
	case strings.Contains(p, "/manifests/"):
		ref := p[strings.LastIndex(p, "/")+1:]
		if r.Method == http.MethodPut {
			b, _ := io.ReadAll(r.Body)
			d := digest.FromBytes(b).String()
			s.manifests[d], s.types[d] = b, r.Header.Get("Content-Type")
			if !strings.Contains(ref, ":") {
				s.tags[ref] = d
				s.tagPuts = append(s.tagPuts, ref)
			}
			w.Header().Set("Docker-Content-Digest", d)
			w.WriteHeader(http.StatusCreated)
			return
		}
		if d, ok := s.tags[ref]; ok {
			ref = d
		}
		b, ok := s.manifests[ref]
		if !ok {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Content-Type", s.types[ref])
		w.Header().Set("Docker-Content-Digest", ref)
		w.Header().Set("Content-Length", strconv.Itoa(len(b)))
		if r.Method == http.MethodGet {
			w.Write(b)
		}
	case strings.Contains(p, "/referrers/"):
		s.referrers++
		subject := p[strings.LastIndex(p, "/")+1:]
		idx := ocispec.Index{Versioned: specs.Versioned{SchemaVersion: 2}, MediaType: ocispec.MediaTypeImageIndex, Manifests: []ocispec.Descriptor{}}
		for d, b := range s.manifests {
			var m ocispec.Manifest
			if json.Unmarshal(b, &m) == nil && m.Subject != nil && m.Subject.Digest.String() == subject {
				idx.Manifests = append(idx.Manifests, ocispec.Descriptor{MediaType: m.MediaType, ArtifactType: m.ArtifactType, Digest: digest.Digest(d), Size: int64(len(b)), Annotations: m.Annotations})
			}
		}
		w.Header().Set("Content-Type", ocispec.MediaTypeImageIndex)
		json.NewEncoder(w).Encode(idx)
	default:
		http.NotFound(w, r)
	}
}

// subjectImage pushes a small image manifest to be the profiles' subject.
func subjectImage(t *testing.T, reg Registry, ref string) digest.Digest {
	t.Helper()
	ctx := context.Background()
	cfg := emptyConfig()
	cfg.Data = nil
	if err := reg.Push(ctx, ref, cfg, emptyJSON); err != nil {
		t.Fatal(err)
	}
	m, _ := json.Marshal(ocispec.Manifest{Versioned: specs.Versioned{SchemaVersion: 2}, MediaType: ocispec.MediaTypeImageManifest, Config: cfg, Layers: []ocispec.Descriptor{}})
	d := ocispec.Descriptor{MediaType: ocispec.MediaTypeImageManifest, Digest: digest.FromBytes(m), Size: int64(len(m))}
	if err := reg.Push(ctx, ref, d, m); err != nil {
		t.Fatal(err)
	}
	return d.Digest
}

// publishAndFind: nothing is found before a Publish; after two, the newer
// is found, and it is for the subject.
func publishAndFind(t *testing.T, f *fetcher.Fetcher, ref string, wantTagSchema bool) {
	ctx := context.Background()
	m := subjectImage(t, f, ref)
	if _, err := Find(ctx, f, ref, m); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Find before Publish: %v, want ErrNotFound", err)
	}
	older := &Profile{Version: Version, Manifest: m, Ref: ref, Layers: []Layer{NewLayer(blobA, tocA, []Chunk{{"old", 0}})}}
	newer := &Profile{Version: Version, Manifest: m, Ref: ref, Layers: []Layer{NewLayer(blobA, tocA, []Chunk{{"new", 0}, {"new", 1}})}}
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	for i, p := range []*Profile{older, newer} {
		pub, err := Publish(ctx, f, ref, p, t0.Add(time.Duration(i)*time.Hour))
		if err != nil {
			t.Fatal(err)
		}
		if pub.TagSchema != wantTagSchema {
			t.Fatalf("Publish used the tag schema: %v, want %v", pub.TagSchema, wantTagSchema)
		}
	}
	got, err := Find(ctx, f, ref, m)
	if err != nil {
		t.Fatal(err)
	}
	if got.Manifest != m || len(got.Layers) != 1 || got.Layers[0].ChunkList()[0].Path != "new" {
		t.Fatalf("Find: %+v, want the newer profile", got)
	}
}

func newFetcher(t *testing.T, host, server string) *fetcher.Fetcher {
	hosts := t.TempDir()
	if _, err := registry.WriteHostsConfig(hosts, host, registry.Endpoint{URL: server}); err != nil {
		t.Fatal(err)
	}
	f, err := fetcher.New(fetcher.Config{HostsDir: hosts, Retries: 1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return f
}

// TestRegistryTagSchema: against Debian's docker-registry, which has no
// referrers API, Publish maintains the tag sha256-<hex> and Find reads it.
func TestRegistryTagSchema(t *testing.T) {
	r := registry.Start(t, registry.Options{})
	f := newFetcher(t, r.Host, r.URL())
	publishAndFind(t, f, r.Ref("profile/tags", "v1"), true)
}

// TestRegistryReferrersAPI: against a registry with the referrers API,
// Publish leaves the tag schema alone and Find asks the API.
func TestRegistryReferrersAPI(t *testing.T) {
	s := &referrersServer{blobs: map[string][]byte{}, manifests: map[string][]byte{}, types: map[string]string{}, tags: map[string]string{}}
	srv := httptest.NewServer(s)
	t.Cleanup(srv.Close)
	u, _ := url.Parse(srv.URL)
	f := newFetcher(t, u.Host, srv.URL)
	publishAndFind(t, f, u.Host+"/profile/api:v1", false)
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, tag := range s.tagPuts {
		if strings.HasPrefix(tag, "sha256-") {
			t.Fatalf("tag schema tag %s pushed to a registry with the referrers API", tag)
		}
	}
	if s.referrers == 0 {
		t.Fatalf("the referrers API was not asked")
	}
}
