package testimage

import (
	"bytes"
	"compress/gzip"
	"fmt"
	"io"

	"github.com/opencontainers/go-digest"
)

// DiffID is the digest of a gzip layer blob's uncompressed tar: what an
// image config's rootfs.diff_ids must hold for it.
func DiffID(blob []byte) (digest.Digest, error) {
	zr, err := gzip.NewReader(bytes.NewReader(blob))
	if err != nil {
		return "", fmt.Errorf("diff ID: %w", err)
	}
	h := digest.SHA256.Digester()
	if _, err := io.Copy(h.Hash(), zr); err != nil {
		return "", fmt.Errorf("diff ID: %w", err)
	}
	return h.Digest(), nil
}
