package blobstore

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
)

// Local is a Store over a directory holding blobs as files named by their
// hex digest, as erofs-image build --blob-dir writes them.
type Local struct {
	dir string
}

// NewLocal returns a Store for dir, which must exist.
func NewLocal(dir string) (*Local, error) {
	st, err := os.Stat(dir)
	if err != nil {
		return nil, fmt.Errorf("blob directory: %w", err)
	}
	if !st.IsDir() {
		return nil, fmt.Errorf("blob directory %s: not a directory", dir)
	}
	return &Local{dir: dir}, nil
}

// Open opens the blob named d. The name is built from the validated
// digest only, so no input can reach outside the directory.
func (l *Local) Open(ctx context.Context, d Digest) (Blob, error) {
	if d.IsZero() {
		return nil, fmt.Errorf("%w: empty digest", ErrBadDigest)
	}
	f, err := os.Open(filepath.Join(l.dir, d.Hex()))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("%s in %s: %w", d, l.dir, ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("%s: %w", d, err)
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("%s: %w", d, err)
	}
	if !st.Mode().IsRegular() {
		f.Close()
		return nil, fmt.Errorf("%s: not a regular file", d)
	}
	return &localBlob{f: f, size: st.Size(), digest: d}, nil
}

type localBlob struct {
	f      *os.File
	size   int64
	digest Digest
}

func (b *localBlob) ReadAt(ctx context.Context, p []byte, off int64) (int, error) {
	if off < 0 || off > b.size {
		return 0, fmt.Errorf("%s: offset %d of %d: %w", b.digest, off, b.size, ErrOutOfRange)
	}
	n, err := b.f.ReadAt(p, off)
	if err != nil && !errors.Is(err, io.EOF) {
		err = fmt.Errorf("%s: reading %d bytes at %d: %w", b.digest, len(p), off, err)
	}
	return n, err
}

func (b *localBlob) Size() int64 { return b.size }

func (b *localBlob) Close() error { return b.f.Close() }
