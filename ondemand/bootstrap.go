package ondemand

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/erofsd/erofsd/blobstore"
)

// MaxBootstrapSize bounds a bootstrap fetched from a blob store.
const MaxBootstrapSize = 4 << 30

// FetchBootstrap makes the image (bootstrap) with the given digest
// available as a local file in dir, named by its hex digest, fetching it
// from store if it is not there yet. Its sha256 is verified before the
// file gets its name, so a file in dir always matches its name.
func FetchBootstrap(ctx context.Context, store blobstore.Store, d blobstore.Digest, dir string) (string, error) {
	path := filepath.Join(dir, d.Hex())
	if _, err := os.Stat(path); err == nil {
		return path, nil
	} else if !errors.Is(err, fs.ErrNotExist) {
		return "", err
	}
	if store == nil {
		return "", fmt.Errorf("bootstrap %s: no blob store to fetch it from", d)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", err
	}
	b, err := store.Open(ctx, d)
	if err != nil {
		return "", fmt.Errorf("bootstrap %s: %w", d, err)
	}
	defer b.Close()
	if b.Size() > MaxBootstrapSize {
		return "", fmt.Errorf("bootstrap %s: %d bytes is more than %d", d, b.Size(), MaxBootstrapSize)
	}
	tmp, err := os.CreateTemp(dir, ".fetch-*")
	if err != nil {
		return "", err
	}
	defer os.Remove(tmp.Name())
	defer tmp.Close()
	h := sha256.New()
	r := io.NewSectionReader(readerAt{ctx, b}, 0, b.Size())
	if _, err := io.Copy(io.MultiWriter(tmp, h), r); err != nil {
		return "", fmt.Errorf("bootstrap %s: %w", d, err)
	}
	if got := blobstore.DigestOf([32]byte(h.Sum(nil))); got != d {
		return "", fmt.Errorf("%w: bootstrap %s has digest %s", ErrDigestMismatch, d, got)
	}
	if err := tmp.Sync(); err != nil {
		return "", err
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return "", err
	}
	return path, nil
}

// readerAt adapts a Blob to io.ReaderAt for one context.
type readerAt struct {
	ctx context.Context
	b   blobstore.Blob
}

func (r readerAt) ReadAt(p []byte, off int64) (int, error) { return r.b.ReadAt(r.ctx, p, off) }
