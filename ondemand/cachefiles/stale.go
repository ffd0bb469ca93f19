package cachefiles

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/erofsd/erofsd/ondemand"
	"golang.org/x/sys/unix"
)

// ForgetStale culls the cache object the kernel would use for
// (volumeKey, cookieKey) if it holds anything but the content of the file
// at path. Cache objects outlive mounts and daemons, and the kernel reads
// what they hold without asking: an image mounted under the fsid of an
// earlier image (whose bootstrap object is named by the fsid) would
// otherwise read the earlier image's metadata where its sizes agree.
// Blobs need no such care: their objects are named after their digest
// and chunk table. An object in use (mounted) is left alone; nothing is
// done without a cache directory.
func (s *Server) ForgetStale(volumeKey, cookieKey, path string) error {
	if s.cull == nil {
		return nil
	}
	// cachefiles names a volume "I<key>" and an object with a printable
	// key "D<key>" in one of 256 fan-out directories "@xx" chosen by a
	// hash of the key; the keys erofsd uses are printable.
	volDir := filepath.Join(s.cull.dir, cacheSubdir, "I"+volumeKey)
	name := "D" + cookieKey
	if _, err := os.Stat(volDir); errors.Is(err, os.ErrNotExist) {
		return nil
	}
	for fan := range 256 {
		dir := filepath.Join(volDir, fmt.Sprintf("@%02x", fan))
		p := filepath.Join(dir, name)
		if _, err := os.Lstat(p); err != nil {
			continue
		}
		same, err := sameContent(p, path)
		if err != nil {
			return err
		}
		if same {
			return nil
		}
		if _, err := s.cull.cullOne(dir, name); err != nil && !errors.Is(err, unix.EBUSY) {
			return fmt.Errorf("culling the stale cache object %s: %w", p, err)
		}
		s.Stats.Culled.Add(1)
		return nil
	}
	return nil
}

// sameContent reports whether the cache file at cached holds the file at
// want, zero padded to a whole block (holes read as zeros, and the
// kernel asks for those anyway).
func sameContent(cached, want string) (bool, error) {
	c, err := os.Open(cached)
	if err != nil {
		return false, err
	}
	defer c.Close()
	w, err := os.Open(want)
	if err != nil {
		return false, err
	}
	defer w.Close()
	cst, err := c.Stat()
	if err != nil {
		return false, err
	}
	wst, err := w.Stat()
	if err != nil {
		return false, err
	}
	if cst.Size() != ondemand.AlignUp(wst.Size()) {
		return false, nil
	}
	const bufSize = 1 << 20
	cb, wb := make([]byte, bufSize), make([]byte, bufSize)
	for off := int64(0); off < cst.Size(); off += bufSize {
		n := min(bufSize, cst.Size()-off)
		if _, err := c.ReadAt(cb[:n], off); err != nil && !errors.Is(err, io.EOF) {
			return false, err
		}
		got, err := w.ReadAt(wb[:n], off)
		if err != nil && !errors.Is(err, io.EOF) {
			return false, err
		}
		clear(wb[got:n])
		if !bytes.Equal(cb[:n], wb[:n]) {
			return false, nil
		}
	}
	return true, nil
}
