// Package space holds what both kernel front ends need to keep their
// cache within bounds: the cache filesystem's usage and the order in
// which cache files are given up.
package space

import (
	"cmp"
	"fmt"
	"slices"
	"time"

	"golang.org/x/sys/unix"
)

// FS is a filesystem's usage in bytes and inodes.
type FS struct {
	Size      int64 // total bytes
	Used      int64 // bytes in use (total less f_bfree)
	Free      int64 // bytes free for unprivileged users (f_bavail)
	Files     int64 // inodes
	FilesFree int64
}

// Statfs reads the usage of the filesystem holding path.
func Statfs(path string) (FS, error) {
	var st unix.Statfs_t
	for range 8 {
		err := unix.Statfs(path, &st)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return FS{}, fmt.Errorf("statfs %s: %w", path, err)
		}
		bs := int64(st.Bsize)
		return FS{Size: int64(st.Blocks) * bs, Used: int64(st.Blocks-st.Bfree) * bs, Free: int64(st.Bavail) * bs, Files: int64(st.Files), FilesFree: int64(st.Ffree)}, nil
	}
	return FS{}, fmt.Errorf("statfs %s: %w", path, unix.EINTR)
}

// Below reports whether free is below pct percent of total (a total of
// 0, as for filesystems without inode counts, is never below).
func Below(free, total int64, pct int) bool {
	return total > 0 && free*100 < total*int64(pct)
}

// Victim is a cache file (or object) that may be given up.
type Victim struct {
	Path  string
	Bytes int64     // space it occupies (allocated blocks)
	Used  time.Time // last use: the later of its access and modification times
	// Wanted marks files of images still registered: they go last.
	Wanted bool
}

// Order sorts victims in the order they are given up: files no
// registered image wants first, then least recently used, then by path
// so that the order is deterministic.
func Order(v []Victim) {
	slices.SortStableFunc(v, func(a, b Victim) int {
		if a.Wanted != b.Wanted {
			if a.Wanted {
				return 1
			}
			return -1
		}
		if c := a.Used.Compare(b.Used); c != 0 {
			return c
		}
		return cmp.Compare(a.Path, b.Path)
	})
}

// LastUse is the later of a stat's access and modification times.
func LastUse(st *unix.Stat_t) time.Time {
	a := time.Unix(st.Atim.Unix())
	m := time.Unix(st.Mtim.Unix())
	if a.After(m) {
		return a
	}
	return m
}
