package erofs

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"sync"
)

// file is an open non-directory file.
type file struct {
	img  *Image
	ino  *inode
	name string

	mu     sync.Mutex
	off    int64
	closed bool

	zc zcache // compressed inodes: the extent last decoded
}

var (
	_ io.ReaderAt = (*file)(nil)
	_ io.Seeker   = (*file)(nil)
)

func (f *file) Stat() (fs.FileInfo, error) {
	if f.isClosed() {
		return nil, pathErr("stat", f.name, fs.ErrClosed)
	}
	return f.img.fileInfo(baseName(f.name), f.ino), nil
}

func (f *file) isClosed() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.closed
}

func (f *file) Read(p []byte) (int, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed {
		return 0, pathErr("read", f.name, fs.ErrClosed)
	}
	if len(p) == 0 {
		return 0, nil
	}
	n, err := f.img.readDataCached(f.ino, &f.zc, p, f.off)
	f.off += int64(n)
	if err == io.EOF {
		if n > 0 {
			return n, nil
		}
		return 0, io.EOF
	}
	if err != nil {
		return n, pathErr("read", f.name, err)
	}
	return n, nil
}

// ReadAt implements io.ReaderAt; it may be called concurrently.
func (f *file) ReadAt(p []byte, off int64) (int, error) {
	if f.isClosed() {
		return 0, pathErr("read", f.name, fs.ErrClosed)
	}
	if off < 0 {
		return 0, pathErr("read", f.name, errors.New("negative offset"))
	}
	n, err := f.img.readDataCached(f.ino, &f.zc, p, off)
	if err != nil && err != io.EOF {
		return n, pathErr("read", f.name, err)
	}
	return n, err
}

func (f *file) Seek(offset int64, whence int) (int64, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed {
		return 0, pathErr("seek", f.name, fs.ErrClosed)
	}
	size := f.ino.size
	if f.ino.isSpecial() {
		size = 0
	}
	var base int64
	switch whence {
	case io.SeekStart:
	case io.SeekCurrent:
		base = f.off
	case io.SeekEnd:
		base = size
	default:
		return 0, pathErr("seek", f.name, fmt.Errorf("invalid whence %d", whence))
	}
	pos := base + offset
	if (offset > 0 && pos < base) || pos < 0 {
		return 0, pathErr("seek", f.name, fmt.Errorf("invalid offset %d", offset))
	}
	f.off = pos
	return pos, nil
}

func (f *file) Close() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed {
		return pathErr("close", f.name, fs.ErrClosed)
	}
	f.closed = true
	f.zc.release()
	return nil
}

// dirFile is an open directory; it implements fs.ReadDirFile.
type dirFile struct {
	img  *Image
	ino  *inode
	name string

	mu      sync.Mutex
	it      *dirIter
	pending []fs.DirEntry
	err     error
	closed  bool
}

var _ fs.ReadDirFile = (*dirFile)(nil)

func (d *dirFile) Stat() (fs.FileInfo, error) {
	d.mu.Lock()
	closed := d.closed
	d.mu.Unlock()
	if closed {
		return nil, pathErr("stat", d.name, fs.ErrClosed)
	}
	return d.img.fileInfo(baseName(d.name), d.ino), nil
}

func (d *dirFile) Read([]byte) (int, error) {
	return 0, pathErr("read", d.name, errIsDir)
}

// ReadDir reads the directory in on-disk (sorted) order, skipping "."
// and "..", with the semantics of fs.ReadDirFile.
func (d *dirFile) ReadDir(n int) ([]fs.DirEntry, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return nil, pathErr("readdir", d.name, fs.ErrClosed)
	}
	if d.it == nil {
		d.it = d.img.newDirIter(d.ino)
	}
	for d.err == nil && (n <= 0 || len(d.pending) < n) {
		ents, err := d.it.next()
		if err != nil {
			d.err = pathErr("readdir", d.name, err)
			break
		}
		if ents == nil {
			break
		}
		d.pending = appendEntries(d.img, d.pending, ents)
	}
	var out []fs.DirEntry
	if n <= 0 || n >= len(d.pending) {
		out, d.pending = d.pending, nil
	} else {
		out = d.pending[:n:n]
		d.pending = d.pending[n:]
	}
	if len(out) == 0 {
		if d.err != nil {
			return out, d.err
		}
		if n > 0 {
			return out, io.EOF
		}
		return []fs.DirEntry{}, nil
	}
	if d.err != nil && len(d.pending) == 0 && n <= 0 {
		return out, d.err
	}
	return out, nil
}

func (d *dirFile) Close() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return pathErr("close", d.name, fs.ErrClosed)
	}
	d.closed = true
	return nil
}
