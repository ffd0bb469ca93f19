package build

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"golang.org/x/sys/unix"
)

// AddDir adds the directory tree at dir (its contents become the image
// root; the root takes dir's own attributes). Symlinks are stored, never
// followed. Files are visited in name order, so builds are reproducible.
//
// The tree is scanned (directory reads, lstat, xattrs) on a goroutine of
// its own, ahead of the building one, which adds entries and streams each
// regular file's data as soon as it is found: the scan's system calls
// overlap with reading and compressing data instead of all coming first.
// With a prefetch list the data waits for the whole tree, whose listed
// files go first.
func (b *Builder) AddDir(ctx context.Context, dir string) error {
	var st unix.Stat_t
	if err := unix.Stat(dir, &st); err != nil {
		return fmt.Errorf("%s: %w", dir, err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFDIR {
		return fmt.Errorf("%s: %w", dir, ErrNotDir)
	}
	w := &dirWalker{b: b, links: map[devIno]string{}}
	root, err := w.node(dir, "", &st)
	if err != nil {
		return err
	}
	if err := b.tree.add(".", root, false); err != nil {
		return err
	}
	sctx, cancel := context.WithCancel(ctx)
	scanned := make(chan scanEntry, 256)
	go func() {
		defer close(scanned)
		if err := w.scan(sctx, dir, "", scanned); err != nil {
			select {
			case scanned <- scanEntry{err: err}:
			case <-sctx.Done():
			}
		}
	}()
	defer func() {
		cancel()
		for range scanned { // let the scanner end
		}
	}()
	for e := range scanned {
		if e.err != nil {
			return e.err
		}
		if err := w.add(ctx, e); err != nil {
			return err
		}
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	return w.addFiles(ctx)
}

// regFile is a regular file found by the walk, waiting for its data.
type regFile struct {
	full, path string
	n          *node
	sparse     bool // fewer blocks allocated than its size: look for holes
}

type devIno struct{ dev, ino uint64 }

type dirWalker struct {
	b     *Builder
	links map[devIno]string // first image path of each multiply linked file
	files []regFile         // with a prefetch list: in walk order, waiting for the tree's end
}

// scanEntry is an entry found by the scan, in walk order, or its error.
type scanEntry struct {
	full, path string
	st         unix.Stat_t
	n          *node // nil for a further link of a multiply linked file
	err        error
}

// scan reads the tree below dir depth first, in name order, and sends
// its entries. It touches nothing of the build: the building goroutine
// adds what it sends.
func (w *dirWalker) scan(ctx context.Context, dir, rel string, out chan<- scanEntry) error {
	f, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("%s: %w", dir, err)
	}
	names, err := f.Readdirnames(-1)
	f.Close()
	if err != nil {
		return fmt.Errorf("%s: %w", dir, err)
	}
	slices.Sort(names)
	for _, name := range names {
		full := filepath.Join(dir, name)
		p := name
		if rel != "" {
			p = rel + "/" + name
		}
		e := scanEntry{full: full, path: p}
		if err := unix.Lstat(full, &e.st); err != nil {
			return fmt.Errorf("%s: %w", full, err)
		}
		isDir := e.st.Mode&unix.S_IFMT == unix.S_IFDIR
		if isDir || e.st.Nlink == 1 {
			if e.n, err = w.node(full, p, &e.st); err != nil {
				return err
			}
		}
		// A file with more links gets its node when it proves to be
		// the first of them (add), which needs the links seen so far.
		select {
		case out <- e:
		case <-ctx.Done():
			return ctx.Err()
		}
		if isDir {
			if err := w.scan(ctx, full, p, out); err != nil {
				return err
			}
		}
	}
	return nil
}

// add adds a scanned entry to the tree, and streams a regular file's data
// into the build (or keeps it for later with a prefetch list).
func (w *dirWalker) add(ctx context.Context, e scanEntry) error {
	st := &e.st
	if st.Mode&unix.S_IFMT != unix.S_IFDIR && st.Nlink > 1 {
		key := devIno{uint64(st.Dev), st.Ino}
		if first, ok := w.links[key]; ok {
			if err := w.b.tree.link(e.path, first, false); err != nil {
				return err
			}
			w.b.progress(e.path)
			return nil
		}
		w.links[key] = e.path
		var err error
		if e.n, err = w.node(e.full, e.path, st); err != nil {
			return err
		}
	}
	n := e.n
	if err := w.b.tree.add(e.path, n, false); err != nil {
		return err
	}
	w.b.progress(e.path)
	if !n.isReg() {
		return nil
	}
	rf := regFile{e.full, e.path, n, st.Blocks*512 < st.Size}
	if w.b.start != nil {
		w.files = append(w.files, rf)
		return nil
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	return w.addFile(ctx, rf)
}

// node builds the attributes of the file at full.
func (w *dirWalker) node(full, p string, st *unix.Stat_t) (*node, error) {
	n := &node{
		mode:  st.Mode,
		uid:   st.Uid,
		gid:   st.Gid,
		mtime: st.Mtim.Sec,
		nsec:  uint32(st.Mtim.Nsec),
		rdev:  st.Rdev,
	}
	if w.b.opts.AllRoot {
		n.uid, n.gid = 0, 0
	}
	switch st.Mode & unix.S_IFMT {
	case unix.S_IFREG:
		n.size = uint64(st.Size)
	case unix.S_IFLNK:
		target, err := os.Readlink(full)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", full, err)
		}
		if len(target) == 0 || len(target) > 4095 {
			return nil, fmt.Errorf("%s: %w: symlink target of %d bytes", full, ErrBadName, len(target))
		}
		n.link = target
	case unix.S_IFDIR, unix.S_IFCHR, unix.S_IFBLK, unix.S_IFIFO, unix.S_IFSOCK:
	default:
		return nil, fmt.Errorf("%s: unknown file type %#o", full, st.Mode&unix.S_IFMT)
	}
	xs, err := readXattrs(full)
	if err != nil {
		return nil, err
	}
	if n.xattr, err = checkXattrs(xs); err != nil {
		return nil, fmt.Errorf("%s: %w", full, err)
	}
	return n, nil
}

// addFiles streams the content of the regular files kept for a prefetch
// list into the build: the listed files first, in list order, so the
// fronts of the blobs are in the order the workload reads them, then the
// others in walk order.
func (w *dirWalker) addFiles(ctx context.Context) error {
	if s := w.b.start; s != nil {
		slices.SortStableFunc(w.files, func(a, b regFile) int { return cmp.Compare(s.rank(a.path), s.rank(b.path)) })
	}
	for _, f := range w.files {
		if err := w.addFile(ctx, f); err != nil {
			return err
		}
	}
	return nil
}

// addFile streams a regular file's content into the build.
func (w *dirWalker) addFile(ctx context.Context, rf regFile) error {
	// A raw fd: os.Open would also try to register the file with the
	// network poller, several wasted syscalls per file.
	fd, err := unix.Open(rf.full, unix.O_RDONLY|unix.O_CLOEXEC|unix.O_NOFOLLOW, 0)
	if err != nil {
		return fmt.Errorf("%s: %w", rf.full, err)
	}
	defer unix.Close(fd)
	src := fileSource{r: fdReader(fd)}
	if rf.sparse {
		if data := dataExtents(fd, int64(rf.n.size)); data != nil {
			src.holes = func(off, cnt int64) bool { return !overlapsData(data, off, cnt) }
			src.skip = func(off, cnt int64) error {
				_, err := unix.Seek(fd, off+cnt, io.SeekStart)
				return err
			}
		}
	}
	return w.b.ingest(ctx, rf.path, rf.n, src)
}

// fdReader reads a raw file descriptor.
type fdReader int

func (fd fdReader) Read(p []byte) (int, error) {
	for {
		n, err := unix.Read(int(fd), p)
		switch {
		case errors.Is(err, unix.EINTR):
			continue
		case err != nil:
			return 0, err
		case n == 0 && len(p) > 0:
			return 0, io.EOF
		}
		return n, nil
	}
}

// dataExtents lists the [start, end) ranges holding data, using
// SEEK_DATA/SEEK_HOLE; nil means unknown (treat all as data).
func dataExtents(fd int, size int64) [][2]int64 {
	var ext [][2]int64
	for off := int64(0); off < size; {
		start, err := unix.Seek(fd, off, unix.SEEK_DATA)
		if errors.Is(err, unix.ENXIO) {
			break
		}
		if err != nil {
			return nil
		}
		end, err := unix.Seek(fd, start, unix.SEEK_HOLE)
		if err != nil {
			return nil
		}
		ext = append(ext, [2]int64{start, end})
		off = end
	}
	if _, err := unix.Seek(fd, 0, io.SeekStart); err != nil {
		return nil
	}
	return ext
}

func overlapsData(ext [][2]int64, off, n int64) bool {
	i, _ := slices.BinarySearchFunc(ext, off, func(e [2]int64, t int64) int {
		if e[1] <= t {
			return -1
		}
		return 1
	})
	return i < len(ext) && ext[i][0] < off+n
}

// readXattrs lists and reads the extended attributes of path without
// following symlinks.
func readXattrs(path string) ([]xattr, error) {
	size, err := unix.Llistxattr(path, nil)
	if err != nil {
		if errors.Is(err, unix.ENOTSUP) || errors.Is(err, unix.EOPNOTSUPP) {
			return nil, nil
		}
		return nil, fmt.Errorf("%s: listing xattrs: %w", path, err)
	}
	if size == 0 {
		return nil, nil
	}
	buf := make([]byte, size)
	size, err = unix.Llistxattr(path, buf)
	if err != nil {
		return nil, fmt.Errorf("%s: listing xattrs: %w", path, err)
	}
	var xs []xattr
	for _, name := range strings.Split(strings.TrimRight(string(buf[:size]), "\x00"), "\x00") {
		if name == "" {
			continue
		}
		vsize, err := unix.Lgetxattr(path, name, nil)
		if err != nil {
			return nil, fmt.Errorf("%s: reading xattr %s: %w", path, name, err)
		}
		val := make([]byte, vsize)
		if vsize > 0 {
			if vsize, err = unix.Lgetxattr(path, name, val); err != nil {
				return nil, fmt.Errorf("%s: reading xattr %s: %w", path, name, err)
			}
		}
		xs = append(xs, xattr{name: name, value: string(val[:vsize])})
	}
	return xs, nil
}
