package erofs

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"
)

// DirBlobs returns a BlobResolver that opens blob files named after their
// tag in dir: filepath.Join(dir, tag). Only tags of exactly 64 lowercase
// hex characters (a sha256 digest) are accepted, so image bytes can never
// name an arbitrary path. Files are opened on first use and cached; the
// resolver's Close (called by Image.Close) closes them. After Close the
// resolver may be used again and reopens files as needed.
func DirBlobs(dir string) BlobResolver {
	return &dirBlobs{dir: dir, files: make(map[string]*os.File)}
}

type dirBlobs struct {
	dir   string
	mu    sync.Mutex
	files map[string]*os.File
}

func validTag(tag string) bool {
	if len(tag) != 64 {
		return false
	}
	for i := 0; i < len(tag); i++ {
		c := tag[i]
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}

func (d *dirBlobs) OpenBlob(device int, tag string) (io.ReaderAt, error) {
	if !validTag(tag) {
		return nil, fmt.Errorf("erofs: device %d: tag %q is not a 64-character lowercase hex digest", device, tag)
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if f := d.files[tag]; f != nil {
		return f, nil
	}
	f, err := os.Open(filepath.Join(d.dir, tag))
	if err != nil {
		return nil, fmt.Errorf("erofs: device %d: %w", device, err)
	}
	d.files[tag] = f
	return f, nil
}

func (d *dirBlobs) Close() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	var errs []error
	for tag, f := range d.files {
		errs = append(errs, f.Close())
		delete(d.files, tag)
	}
	return errors.Join(errs...)
}
