package build

import (
	"errors"
	"fmt"
	"path"
	"slices"
	"strings"

	"golang.org/x/sys/unix"
)

// Errors callers can test for. Each is wrapped with the offending path.
var (
	ErrUnsafePath = errors.New("unsafe path")
	ErrDuplicate  = errors.New("duplicate entry")
	ErrNotDir     = errors.New("parent is not a directory")
	ErrBadLink    = errors.New("bad hard link")
	ErrBadName    = errors.New("bad file name")
	ErrBadXattr   = errors.New("unsupported xattr")
	ErrTooLarge   = errors.New("too large for the format")
)

// node is one inode of the tree under construction. A hard-linked file
// is one node named by several entries.
type node struct {
	mode  uint32 // S_IF* | permission bits, as in stat(2)
	uid   uint32
	gid   uint32
	mtime int64
	nsec  uint32
	rdev  uint64 // unix.Mkdev form
	size  uint64
	link  string
	xattr []xattr // sorted by full name

	// Directories: entries by name; sorted into dirents at layout time.
	entries  map[string]*node
	entLayer map[string]int // layer that wrote each entry (AddLayer builds)
	explicit bool           // a directory entry was seen for it (not only implied)
	opaque   bool           // an OCI opaque marker applies: keep trusted.overlay.opaque

	nlink uint32 // computed at layout time for non-dirs: dirents naming it

	data fileData // where a regular file's bytes went

	// Layout results.
	nid       uint64
	ino       uint32
	extended  bool
	layout    uint16
	inline    []byte // tail stored after the inode (FLAT_INLINE)
	blocks    []byte // non-inline metadata-owned data (dirs, long symlinks): written to blkaddr
	blkaddr   uint32
	xattrBody []byte // encoded inline xattr area
	isize     int    // inode + xattr + inline/index bytes
}

func (n *node) isDir() bool  { return n.mode&unix.S_IFMT == unix.S_IFDIR }
func (n *node) isReg() bool  { return n.mode&unix.S_IFMT == unix.S_IFREG }
func (n *node) isLink() bool { return n.mode&unix.S_IFMT == unix.S_IFLNK }

// tree holds the whole namespace of an image being built.
type tree struct {
	root  *node
	count int
	layer int // the layer entries are being added for (0: not layered)
}

func newTree() *tree {
	return &tree{root: &node{mode: unix.S_IFDIR | 0o755, entries: map[string]*node{}}, count: 1}
}

// cleanPath turns an archive or walk path into the components below the
// root. It refuses absolute paths and any ".." component; "." components
// and a leading "./" are dropped, as tar writers commonly emit them.
func cleanPath(p string) ([]string, error) {
	if strings.HasPrefix(p, "/") {
		return nil, fmt.Errorf("%q: %w: absolute path", p, ErrUnsafePath)
	}
	var parts []string
	for _, c := range strings.Split(p, "/") {
		switch c {
		case "", ".":
			continue
		case "..":
			return nil, fmt.Errorf("%q: %w: \"..\" component", p, ErrUnsafePath)
		}
		if len(c) > 255 {
			return nil, fmt.Errorf("%q: %w: component longer than 255 bytes", p, ErrBadName)
		}
		if strings.IndexByte(c, 0) >= 0 {
			return nil, fmt.Errorf("%q: %w: NUL byte in name", p, ErrBadName)
		}
		parts = append(parts, c)
	}
	return parts, nil
}

// dirFor returns the directory that holds parts[:len(parts)-1], creating
// implied directories (mode 0755, owned by root) on the way.
func (t *tree) dirFor(p string, parts []string) (*node, error) {
	dir := t.root
	for i, c := range parts[:len(parts)-1] {
		child := dir.entries[c]
		if child == nil {
			child = &node{mode: unix.S_IFDIR | 0o755, entries: map[string]*node{}, mtime: dir.mtime, nsec: dir.nsec}
			t.setEntry(dir, c, child)
			t.count++
		} else if !child.isDir() {
			return nil, fmt.Errorf("%q: %w: %q", p, ErrNotDir, path.Join(parts[:i+1]...))
		}
		dir = child
	}
	return dir, nil
}

// setEntry links name in dir to n, remembering the layer doing it.
func (t *tree) setEntry(dir *node, name string, n *node) {
	dir.entries[name] = n
	if t.layer > 0 {
		if dir.entLayer == nil {
			dir.entLayer = map[string]int{}
		}
		dir.entLayer[name] = t.layer
	}
}

// hideLower removes the entries of dir that lower layers wrote (an OCI
// opaque marker).
func (t *tree) hideLower(dir *node) {
	for name := range dir.entries {
		if dir.entLayer[name] < t.layer {
			delete(dir.entries, name)
			delete(dir.entLayer, name)
		}
	}
}

// lookup returns the node named by p, or nil.
func (t *tree) lookup(parts []string) *node {
	n := t.root
	for _, c := range parts {
		if n == nil || !n.isDir() {
			return nil
		}
		n = n.entries[c]
	}
	return n
}

// add inserts n at path p. A directory may be declared once after it was
// implied by its children; any other repeat is ErrDuplicate unless replace
// is set (OCI layer semantics: a later entry replaces an earlier one).
func (t *tree) add(p string, n *node, replace bool) error {
	parts, err := cleanPath(p)
	if err != nil {
		return err
	}
	if len(parts) == 0 {
		if !n.isDir() {
			return fmt.Errorf("%q: %w: root must be a directory", p, ErrNotDir)
		}
		if t.root.explicit && !replace {
			return fmt.Errorf("%q: %w", p, ErrDuplicate)
		}
		t.root.setMeta(n)
		return nil
	}
	dir, err := t.dirFor(p, parts)
	if err != nil {
		return err
	}
	name := parts[len(parts)-1]
	old := dir.entries[name]
	if old != nil {
		switch {
		case old.isDir() && n.isDir() && (!old.explicit || replace):
			old.setMeta(n)
			t.setEntry(dir, name, old)
			return nil
		case !replace:
			return fmt.Errorf("%q: %w", p, ErrDuplicate)
		}
	}
	if n.isDir() && n.entries == nil {
		n.entries = map[string]*node{}
	}
	n.explicit = true
	t.setEntry(dir, name, n)
	if old == nil {
		t.count++
	}
	return nil
}

// link adds a hard link at p to the existing non-directory at target.
func (t *tree) link(p, target string, replace bool) error {
	tparts, err := cleanPath(target)
	if err != nil {
		return fmt.Errorf("hard link %q -> %q: %w", p, target, err)
	}
	tn := t.lookup(tparts)
	switch {
	case tn == nil:
		return fmt.Errorf("hard link %q -> %q: %w: target does not exist", p, target, ErrBadLink)
	case tn.isDir():
		return fmt.Errorf("hard link %q -> %q: %w: target is a directory", p, target, ErrBadLink)
	}
	parts, err := cleanPath(p)
	if err != nil {
		return err
	}
	if len(parts) == 0 {
		return fmt.Errorf("hard link %q: %w: cannot replace the root", p, ErrBadLink)
	}
	dir, err := t.dirFor(p, parts)
	if err != nil {
		return err
	}
	name := parts[len(parts)-1]
	if old, ok := dir.entries[name]; ok {
		if !replace {
			return fmt.Errorf("%q: %w", p, ErrDuplicate)
		}
		if old == tn {
			return nil
		}
	}
	t.setEntry(dir, name, tn)
	return nil
}

// remove deletes p (and everything below it). Missing paths are fine.
func (t *tree) remove(parts []string) {
	if len(parts) == 0 {
		return
	}
	dir := t.lookup(parts[:len(parts)-1])
	if dir == nil || !dir.isDir() {
		return
	}
	delete(dir.entries, parts[len(parts)-1])
	delete(dir.entLayer, parts[len(parts)-1])
}

// setMeta copies the attributes of a directory declaration into an
// existing directory node, keeping its entries.
func (n *node) setMeta(from *node) {
	n.mode, n.uid, n.gid = from.mode, from.uid, from.gid
	n.mtime, n.nsec = from.mtime, from.nsec
	n.xattr = from.xattr
	n.explicit = true
	if n.opaque {
		for _, x := range n.xattr {
			if x.name == opaqueXattr {
				return
			}
		}
		n.xattr, _ = checkXattrs(append(slices.Clone(n.xattr), xattr{opaqueXattr, "y"}))
	}
}

// sortedNames returns a directory's entry names in EROFS order (bytewise).
func (n *node) sortedNames() []string {
	names := make([]string, 0, len(n.entries))
	for name := range n.entries {
		names = append(names, name)
	}
	slices.Sort(names)
	return names
}

// fileType maps a mode to its dirent file type.
func fileType(mode uint32) uint8 {
	switch mode & unix.S_IFMT {
	case unix.S_IFREG:
		return 1
	case unix.S_IFDIR:
		return 2
	case unix.S_IFCHR:
		return 3
	case unix.S_IFBLK:
		return 4
	case unix.S_IFIFO:
		return 5
	case unix.S_IFSOCK:
		return 6
	case unix.S_IFLNK:
		return 7
	}
	return 0
}
