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
	dir   string
	stats *BackendStats
}

// NewLocal returns a Store for dir, which must exist.
func NewLocal(dir string) (*Local, error) { return NewLocalStats(dir, nil) }

// NewLocalStats is NewLocal counting into stats (nil: the store's own).
func NewLocalStats(dir string, stats *BackendStats) (*Local, error) {
	if stats == nil {
		stats = new(BackendStats)
	}
	st, err := os.Stat(dir)
	if err != nil {
		return nil, fmt.Errorf("blob directory: %w", err)
	}
	if !st.IsDir() {
		return nil, fmt.Errorf("blob directory %s: not a directory", dir)
	}
	return &Local{dir: dir, stats: stats}, nil
}

// Stats returns the store's counters.
func (l *Local) Stats() *BackendStats { return l.stats }

// Open opens the blob named d. The name is built from the validated
// digest only, so no input can reach outside the directory.
func (l *Local) Open(ctx context.Context, d Digest) (Blob, error) {
	if d.IsZero() {
		return nil, fmt.Errorf("%w: empty digest", ErrBadDigest)
	}
	l.stats.Requests.Add(1)
	b, err := l.open(d)
	l.stats.countError(err)
	return b, err
}

func (l *Local) open(d Digest) (Blob, error) {
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
	return &localBlob{f: f, size: st.Size(), digest: d, stats: l.stats}, nil
}

type localBlob struct {
	f      *os.File
	size   int64
	digest Digest
	stats  *BackendStats
}

func (b *localBlob) ReadAt(ctx context.Context, p []byte, off int64) (int, error) {
	if off < 0 || off > b.size {
		return 0, fmt.Errorf("%s: offset %d of %d: %w", b.digest, off, b.size, ErrOutOfRange)
	}
	b.stats.Requests.Add(1)
	n, err := b.f.ReadAt(p, off)
	b.stats.Bytes.Add(int64(n))
	if err != nil && !errors.Is(err, io.EOF) {
		err = fmt.Errorf("%s: reading %d bytes at %d: %w", b.digest, len(p), off, err)
		b.stats.countError(err)
	}
	return n, err
}

func (b *localBlob) Size() int64 { return b.size }

// File returns the blob's open file (FileBacked).
func (b *localBlob) File() *os.File { return b.f }

// Copied counts a read the caller made from File.
func (b *localBlob) Copied(n int64) {
	b.stats.Requests.Add(1)
	b.stats.Bytes.Add(n)
}

func (b *localBlob) Close() error { return b.f.Close() }
