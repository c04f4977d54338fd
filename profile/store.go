package profile

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/opencontainers/go-digest"
)

// Store keeps profiles in a directory, one file per key: <alg>-<hex>.json
// for a manifest digest, ref-<sha256 of the reference>.json for a
// reference.
type Store struct{ dir string }

// NewStore returns the store in dir (created on the first Put).
func NewStore(dir string) *Store { return &Store{dir: dir} }

// Dir is the store's directory.
func (s *Store) Dir() string { return s.dir }

func (s *Store) file(key string) (string, error) {
	if ref, ok := strings.CutPrefix(key, "ref:"); ok && ref != "" {
		h := sha256.Sum256([]byte(ref))
		return filepath.Join(s.dir, "ref-"+hex.EncodeToString(h[:])+".json"), nil
	}
	d, err := digest.Parse(key)
	if err != nil {
		return "", fmt.Errorf("%w: key %q: %w", ErrInvalid, key, err)
	}
	return filepath.Join(s.dir, d.Algorithm().String()+"-"+d.Encoded()+".json"), nil
}

// Get reads the profile stored under key: ErrNotFound when there is none.
// A file that does not parse is an error (ErrInvalid), not a miss.
func (s *Store) Get(key string) (*Profile, error) {
	name, err := s.file(key)
	if err != nil {
		return nil, err
	}
	f, err := os.Open(name)
	if errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("%w: %s", ErrNotFound, key)
	}
	if err != nil {
		return nil, fmt.Errorf("profile: %w", err)
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, MaxBytes+1))
	if err != nil {
		return nil, fmt.Errorf("profile: %w", err)
	}
	p, err := Parse(b)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	return p, nil
}

// Put stores p under its key, atomically (a temporary file, synced, then
// renamed), replacing what was there.
func (s *Store) Put(p *Profile) error {
	b, err := Marshal(p)
	if err != nil {
		return err
	}
	name, err := s.file(p.Key())
	if err != nil {
		return err
	}
	if err := os.MkdirAll(s.dir, 0o700); err != nil {
		return fmt.Errorf("profile: %w", err)
	}
	tmp, err := os.CreateTemp(s.dir, ".tmp-*")
	if err != nil {
		return fmt.Errorf("profile: %w", err)
	}
	defer os.Remove(tmp.Name()) // after a successful rename: nothing
	_, err = tmp.Write(b)
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp.Name(), name)
	}
	if err != nil {
		return fmt.Errorf("profile: storing %s: %w", p.Key(), err)
	}
	return nil
}

// Remove deletes the profile stored under key (ErrNotFound if none).
func (s *Store) Remove(key string) error {
	name, err := s.file(key)
	if err != nil {
		return err
	}
	if err := os.Remove(name); errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("%w: %s", ErrNotFound, key)
	} else if err != nil {
		return fmt.Errorf("profile: %w", err)
	}
	return nil
}

// List reads every stored profile, sorted by key. Files that do not parse
// are returned in errs, by file name, and do not stop the listing.
func (s *Store) List() (ps []*Profile, errs error) {
	ents, err := os.ReadDir(s.dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("profile: %w", err)
	}
	var all []error
	for _, e := range ents {
		if e.IsDir() || !strings.HasSuffix(e.Name(), ".json") || strings.HasPrefix(e.Name(), ".") {
			continue
		}
		b, err := os.ReadFile(filepath.Join(s.dir, e.Name()))
		if err == nil && len(b) > MaxBytes {
			err = fmt.Errorf("%w: %d bytes", ErrTooLarge, len(b))
		}
		var p *Profile
		if err == nil {
			p, err = Parse(b)
		}
		if err != nil {
			all = append(all, fmt.Errorf("%s: %w", e.Name(), err))
			continue
		}
		ps = append(ps, p)
	}
	slices.SortFunc(ps, func(a, b *Profile) int { return strings.Compare(a.Key(), b.Key()) })
	return ps, errors.Join(all...)
}
