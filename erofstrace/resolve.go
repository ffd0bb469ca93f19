package erofstrace

import (
	"cmp"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"slices"

	"github.com/erofsd/erofsd/internal/mountinfo"
	"github.com/erofsd/erofsd/prefetchlist"
	"golang.org/x/sys/unix"
)

// Mount is an EROFS mount to trace.
type Mount struct {
	Path string // the mount point: absolute, symbolic links resolved
	Dev  uint64 // st_dev of its files, for Open
	// Root is the directory of the image mounted there: "/", or the
	// directory a bind mount took.
	Root string
}

// StatMount checks that mountpoint is where an EROFS filesystem is
// mounted (not a directory inside one: the list's paths are paths in the
// image) and returns it; a mount of another filesystem is an error
// wrapping ErrNotErofs.
func StatMount(mountpoint string) (*Mount, error) {
	p, err := filepath.Abs(mountpoint)
	if err == nil {
		p, err = filepath.EvalSymlinks(p)
	}
	if err != nil {
		return nil, fmt.Errorf("erofstrace: %w", err)
	}
	var sfs unix.Statfs_t
	if err := unix.Statfs(p, &sfs); err != nil {
		return nil, fmt.Errorf("erofstrace: statfs %s: %w", p, err)
	}
	if uint32(sfs.Type) != unix.EROFS_SUPER_MAGIC_V1 {
		return nil, fmt.Errorf("erofstrace: %s: %w (filesystem magic %#x)", p, ErrNotErofs, uint32(sfs.Type))
	}
	var st unix.Stat_t
	if err := unix.Stat(p, &st); err != nil {
		return nil, fmt.Errorf("erofstrace: stat %s: %w", p, err)
	}
	entries, err := mountinfo.Read()
	if err != nil {
		return nil, fmt.Errorf("erofstrace: %w", err)
	}
	e, ok := mountinfo.Top(entries, p)
	if !ok {
		return nil, fmt.Errorf("erofstrace: %s is inside an EROFS mount, not its mount point", p)
	}
	if e.FSType != "erofs" {
		// Stacked mounts: statfs and mountinfo disagree on what is on top.
		return nil, fmt.Errorf("erofstrace: %s: %w (mountinfo says %s)", p, ErrNotErofs, e.FSType)
	}
	return &Mount{Path: p, Dev: uint64(st.Dev), Root: e.Root}, nil
}

// ResolveOptions tune Resolve; the zero value (or nil) takes the
// defaults.
type ResolveOptions struct {
	// MaxWalk bounds the directory entries Resolve reads looking for the
	// traced inodes (default DefaultMaxWalk).
	MaxWalk int
	// PageSize is the size of the pages events count (default
	// os.Getpagesize(), the kernel's).
	PageSize int
}

// Stats summarizes a trace turned into a list.
type Stats struct {
	Events int   // events in the trace
	Files  int   // files in the list
	Bytes  int64 // bytes in their ranges
	// Unresolved counts the nids no path was found for: under a submount,
	// outside the directory a bind mount took, or beyond MaxWalk.
	// UnresolvedEvents counts their events.
	Unresolved, UnresolvedEvents int
	// NotFiles counts the nids that were not regular files (symbolic
	// links, or directories on kernels that do not tell their reads
	// apart).
	NotFiles int
	// Walked counts the directory entries read; WalkLimited says MaxWalk
	// ended the walk before every nid was found.
	Walked      int
	WalkLimited bool
	// Lost and Dropped are the trace's: events it misses.
	Lost, Dropped uint64
}

// Resolve turns tr, a trace of the EROFS mount at mountpoint, into a
// prefetch list: the files read, as paths in the image, in the order of
// their first read, each with the byte ranges its pages cover, clipped to
// its size. It finds the files by walking the mounted filesystem, which
// must be the one traced. Nids it cannot find are counted, not an error.
func Resolve(mountpoint string, tr *Trace, opts *ResolveOptions) (*prefetchlist.List, Stats, error) {
	var o ResolveOptions
	if opts != nil {
		o = *opts
	}
	if o.MaxWalk <= 0 {
		o.MaxWalk = DefaultMaxWalk
	}
	if o.PageSize <= 0 {
		o.PageSize = os.Getpagesize()
	}
	st := Stats{Events: len(tr.Events), Lost: tr.Lost, Dropped: tr.Dropped}
	m, err := StatMount(mountpoint)
	if err != nil {
		return nil, st, err
	}
	if m.Dev != tr.Dev {
		return nil, st, fmt.Errorf("erofstrace: %s is device %d:%d now, the trace is of %d:%d", m.Path,
			unix.Major(m.Dev), unix.Minor(m.Dev), unix.Major(tr.Dev), unix.Minor(tr.Dev))
	}

	// Events from different CPUs may reach the ring slightly out of
	// order; first access is by time.
	events := slices.Clone(tr.Events)
	slices.SortStableFunc(events, func(a, b Event) int { return cmp.Compare(a.Time, b.Time) })
	want := make(map[uint64]bool)
	for _, ev := range events {
		want[ev.Nid] = true
	}
	w := walker{root: m.Path, dev: m.Dev, want: want, found: make(map[uint64]node, len(want)), max: o.MaxWalk}
	if err := w.walk(); err != nil {
		return nil, st, err
	}
	st.Walked, st.WalkLimited = w.entries, w.limited

	list := &prefetchlist.List{}
	ps := int64(o.PageSize)
	unresolved, notFiles := map[uint64]bool{}, map[uint64]bool{}
	for _, ev := range events {
		n, ok := w.found[ev.Nid]
		switch {
		case !ok:
			unresolved[ev.Nid] = true
			st.UnresolvedEvents++
			continue
		case n.typ != unix.DT_REG:
			notFiles[ev.Nid] = true
			continue
		}
		if n.size < 0 {
			if n.size, err = w.size(n.rel); err != nil {
				return nil, st, err
			}
			w.found[ev.Nid] = n
		}
		if ev.Index >= uint64((n.size+ps-1)/ps) {
			continue // past the end: nothing of the file
		}
		off := int64(ev.Index) * ps
		list.Add(path.Join(m.Root, n.rel), off, min(int64(ev.Pages)*ps, n.size-off))
	}
	list.Normalize()
	st.Unresolved, st.NotFiles, st.Files = len(unresolved), len(notFiles), len(list.Entries)
	for _, e := range list.Entries {
		for _, r := range e.Ranges {
			st.Bytes += r.Len
		}
	}
	return list, st, nil
}

// node is an inode the walk found.
type node struct {
	rel  string // path from the mount point; "" for its root
	typ  uint8  // unix.DT_*
	size int64  // of a regular file; -1 until looked up
}

// walker finds the paths of the nids in want under root. A directory
// entry's inode number is the nid (erofs_readdir reports it), so reading
// directories suffices: no inode is looked up but the files found.
type walker struct {
	root    string
	dev     uint64
	want    map[uint64]bool
	found   map[uint64]node
	max     int
	entries int
	limited bool
}

func (w *walker) walk() error {
	var st unix.Stat_t
	if err := unix.Stat(w.root, &st); err != nil {
		return fmt.Errorf("erofstrace: stat %s: %w", w.root, err)
	}
	w.note(st.Ino, "", unix.DT_DIR)
	buf := make([]byte, 32<<10)
	stack := []string{""} // directories to read, depth first
	for len(stack) > 0 && len(w.found) < len(w.want) {
		dir := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		subdirs, err := w.readDir(dir, buf)
		if err != nil {
			return err
		}
		if w.limited {
			return nil
		}
		// Pushed in reverse to be read in directory order, so that of a
		// file's hard links, the first path in that order is taken.
		for i := len(subdirs) - 1; i >= 0; i-- {
			stack = append(stack, subdirs[i])
		}
	}
	return nil
}

// readDir notes the wanted entries of dir and returns its subdirectories.
// A directory that another mount covers, or that cannot be opened, is
// skipped: its inodes stay unresolved.
func (w *walker) readDir(dir string, buf []byte) ([]string, error) {
	p := filepath.Join(w.root, dir)
	fd, err := unix.Open(p, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, nil
	}
	defer unix.Close(fd)
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil || uint64(st.Dev) != w.dev {
		return nil, nil
	}
	var subdirs []string
	for {
		n, err := unix.Getdents(fd, buf)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("erofstrace: read directory %s: %w", p, err)
		}
		if n == 0 {
			return subdirs, nil
		}
		for b := buf[:n]; len(b) > 0; {
			ino, typ, name, reclen, ok := parseDirent(b)
			if !ok {
				return nil, fmt.Errorf("erofstrace: read directory %s: bad dirent", p)
			}
			b = b[reclen:]
			if name == "." || name == ".." {
				continue
			}
			if w.entries++; w.entries > w.max {
				w.limited = true
				return nil, nil
			}
			rel := path.Join(dir, name)
			if typ == unix.DT_UNKNOWN {
				typ = w.typeOf(rel)
			}
			w.note(ino, rel, typ)
			if typ == unix.DT_DIR {
				subdirs = append(subdirs, rel)
			}
		}
	}
}

func (w *walker) note(ino uint64, rel string, typ uint8) {
	if _, ok := w.found[ino]; w.want[ino] && !ok {
		w.found[ino] = node{rel: rel, typ: typ, size: -1}
	}
}

// typeOf finds the type of an entry whose dirent does not say it.
func (w *walker) typeOf(rel string) uint8 {
	var st unix.Stat_t
	if err := unix.Lstat(filepath.Join(w.root, rel), &st); err != nil {
		return unix.DT_UNKNOWN
	}
	switch st.Mode & unix.S_IFMT {
	case unix.S_IFREG:
		return unix.DT_REG
	case unix.S_IFDIR:
		return unix.DT_DIR
	}
	return unix.DT_UNKNOWN
}

func (w *walker) size(rel string) (int64, error) {
	var st unix.Stat_t
	if err := unix.Lstat(filepath.Join(w.root, rel), &st); err != nil {
		return 0, fmt.Errorf("erofstrace: %w", err)
	}
	return st.Size, nil
}

// parseDirent decodes the struct linux_dirent64 at the start of b.
func parseDirent(b []byte) (ino uint64, typ uint8, name string, reclen int, ok bool) {
	const nameOff = 19 // d_ino, d_off (8 bytes each), d_reclen (2), d_type (1)
	if len(b) < nameOff {
		return 0, 0, "", 0, false
	}
	reclen = int(binary.NativeEndian.Uint16(b[16:]))
	if reclen <= nameOff || reclen > len(b) {
		return 0, 0, "", 0, false
	}
	nameb := b[nameOff:reclen]
	if i := slices.Index(nameb, 0); i >= 0 {
		nameb = nameb[:i]
	}
	return binary.NativeEndian.Uint64(b), b[18], string(nameb), reclen, true
}
