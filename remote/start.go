package remote

import (
	"context"
	"fmt"
	"path"
	"strings"
	"time"

	"github.com/lazysnap/lazysnap/fs/fetch"
	"github.com/lazysnap/lazysnap/snapshotter"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// What an image says its container runs first: the first Mount of an
// image reads the image's configuration (the manifest and the config
// blob: three round trips, made while the Mount reads the layer's TOC, so
// they cost the Mount nothing) for its entrypoint, or else its command,
// and each layer of the image, once mounted, fetches that program and
// what it says is read next (fetch.Layer.PredictStart: an ELF's
// interpreter, ld.so.cache and libraries) before the container asks, over
// a link that is idle while containerd finishes the pull and starts the
// container; so is the user database (/etc/passwd and /etc/group), which
// the runtime reads before the program starts. The program is a guess: a container started with another command
// still needs the loader and the C library, mostly, and pays for the
// program alone otherwise. Prediction off (fetch.Options.NoPredict) turns
// it off too.
const (
	// startTTL is how long an image's start is kept for its other
	// layers' Mounts (containerd makes them within seconds).
	startTTL = time.Minute
	// maxStarts bounds the images whose start is kept.
	maxStarts = 64
	// startLookupTimeout bounds the configuration's lookup.
	startLookupTimeout = 10 * time.Second
	// defaultPath is the PATH a configuration without one runs with (the
	// one runc and containerd's CRI set).
	defaultPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
)

// configSource is a Source that reads an image's configuration
// (fetcherSource).
type configSource interface {
	ImageConfig(ctx context.Context, ref string) (ocispec.ImageConfig, error)
}

// imageStart is the program an image's container runs first, being
// looked up or found.
type imageStart struct {
	done  chan struct{} // closed once paths is set
	paths []string      // where the program may be (startPaths); nil if unknown
	err   error         // the lookup's failure
	at    time.Time
}

// startOf returns the start of src's image, beginning its lookup at the
// image's first Mount; nil when the Source reads no configurations or
// prediction is off.
func (r *FS) startOf(src snapshotter.LayerSource) *imageStart {
	cs, ok := r.src.(configSource)
	if !ok || r.opts.Layer.NoPredict {
		return nil
	}
	key := src.Ref
	if src.Manifest != "" {
		key = src.Manifest.String()
	}
	r.mu.Lock()
	if s, ok := r.starts[key]; ok && time.Since(s.at) < startTTL {
		r.mu.Unlock()
		return s
	}
	for k, s := range r.starts {
		if time.Since(s.at) >= startTTL || len(r.starts) >= maxStarts {
			delete(r.starts, k)
		}
	}
	s := &imageStart{done: make(chan struct{}), at: time.Now()}
	r.starts[key] = s
	r.mu.Unlock()
	if !r.spawn(func(ctx context.Context) { s.lookup(ctx, cs, src.Ref) }) {
		s.err = ErrClosed
		close(s.done)
	}
	return s
}

// lookup reads the image's configuration and sets the start's paths.
func (s *imageStart) lookup(ctx context.Context, cs configSource, ref string) {
	defer close(s.done)
	ctx, cancel := context.WithTimeout(ctx, startLookupTimeout)
	defer cancel()
	cfg, err := cs.ImageConfig(ctx, ref)
	if err != nil {
		s.err = err
		return
	}
	s.paths = startPaths(cfg)
}

// predictStart has l fetch what the image's container runs first, once
// the lookup has found it, in a goroutine of the FS's (the layer's own
// fetches end with it).
func (r *FS) predictStart(s *imageStart, l *fetch.Layer) {
	if s == nil {
		return
	}
	r.spawn(func(ctx context.Context) {
		select {
		case <-s.done:
		case <-ctx.Done():
			return
		}
		if len(s.paths) > 0 {
			l.PredictStart(s.paths)
		}
	})
	// the user database, which the runtime reads to set the container's
	// user and groups before it starts the program (containerd's
	// WithUser and WithAdditionalGIDs), whatever the configuration says
	l.PredictFiles([]string{"/etc/passwd", "/etc/group"})
}

// startPaths returns where the program a container of cfg runs first may
// be, in the order the runtime looks: the entrypoint's first word, else
// the command's; a path (relative ones from the working directory), or a
// bare name in each directory of the configuration's PATH (else
// defaultPath).
func startPaths(cfg ocispec.ImageConfig) []string {
	args := cfg.Entrypoint
	if len(args) == 0 {
		args = cfg.Cmd
	}
	if len(args) == 0 || args[0] == "" {
		return nil
	}
	exe := args[0]
	if strings.Contains(exe, "/") {
		return []string{path.Join("/", cfg.WorkingDir, exe)}
	}
	search := defaultPath
	for _, e := range cfg.Env {
		if v, ok := strings.CutPrefix(e, "PATH="); ok {
			search = v
		}
	}
	var out []string
	for _, dir := range strings.Split(search, ":") {
		if path.IsAbs(dir) {
			out = append(out, path.Join(dir, exe))
		}
	}
	return out
}

// ImageConfig reads the configuration of the image ref names (this
// platform's manifest of an index).
func (s fetcherSource) ImageConfig(ctx context.Context, ref string) (ocispec.ImageConfig, error) {
	im, err := s.manifest(ctx, ref)
	if err != nil {
		return ocispec.ImageConfig{}, err
	}
	if im.config.Digest == "" {
		return ocispec.ImageConfig{}, fmt.Errorf("%s: the manifest names no config", ref)
	}
	var img ocispec.Image
	if err := s.fetchJSON(ctx, ref, im.config, &img); err != nil {
		return ocispec.ImageConfig{}, err
	}
	return img.Config, nil
}
