// Package treecmp compares two directory trees attribute by attribute.
//
// [Compare] walks both trees without following symlinks and reports every
// difference in presence, file type, permission bits (including setuid,
// setgid and sticky), ownership, link count, size, modification time,
// content, symlink target, device numbers, extended attributes (every
// namespace llistxattr(2) returns) and hardlink identity (the partition of
// the paths into same-inode groups).
//
// It is meant for checking filesystem image builders: the want tree is the
// source directory, the got tree is the mounted or extracted result.
// Content is compared by streaming both files; on the want side holes found
// with SEEK_DATA/SEEK_HOLE are not read (they are known to be zeros), but on
// the got side every byte is read and checked, so a 4 GiB sparse file costs
// one sequential read of the got file. Differing contents are reported with
// the SHA-256 digests of both files and the offset of the first difference.
//
// Directory sizes are never compared: they depend on the filesystem's
// directory format, not on the tree. Symlink sizes are covered by the
// target comparison.
package treecmp

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"golang.org/x/sys/unix"
)

// Options relaxes the comparison.
type Options struct {
	// IgnoreMtime skips modification times entirely.
	IgnoreMtime bool
	// IgnoreDirMtime skips the modification times of directories.
	IgnoreDirMtime bool
	// IgnoreSymlinkMtime skips the modification times of symlinks.
	IgnoreSymlinkMtime bool
	// MtimeSeconds compares modification times in whole seconds only.
	MtimeSeconds bool
	// IgnoreOwner skips uid and gid.
	IgnoreOwner bool
	// IgnoreDirNlink skips the link count of directories (which counts
	// subdirectories on most filesystems but not on all).
	IgnoreDirNlink bool
	// IgnoreXattrs lists extended attribute names to ignore, such as
	// "security.selinux". An entry ending in "*" ignores every name with
	// that prefix ("trusted.*").
	IgnoreXattrs []string
	// IgnorePath, when set, is called with each slash-separated relative
	// path ("." is the root); returning true leaves out that path and,
	// for a directory, everything below it, on both sides.
	IgnorePath func(rel string) bool
}

// Kinds of difference, used in Difference.What.
const (
	WhatPresence = "presence"       // path exists on one side only
	WhatType     = "type"           // file types differ
	WhatMode     = "mode"           // permission bits (07777) differ
	WhatUID      = "uid"            // owner differs
	WhatGID      = "gid"            // group differs
	WhatNlink    = "nlink"          // link count differs
	WhatSize     = "size"           // size of a regular file differs
	WhatMtime    = "mtime"          // modification time differs
	WhatContent  = "content"        // regular file bytes differ
	WhatTarget   = "symlink target" // symlink targets differ
	WhatRdev     = "rdev"           // device numbers differ
	WhatXattr    = "xattr"          // one extended attribute differs
	WhatHardlink = "hardlink"       // the set of names sharing the inode differs
)

// Difference is one difference between the want and the got tree.
type Difference struct {
	// Path is the slash-separated path relative to the tree roots; the
	// roots themselves are ".".
	Path string
	// What is one of the What* constants.
	What string
	// Want and Got describe the value in the want and in the got tree.
	// For xattrs both start with the attribute name.
	Want, Got string
}

// String formats d on one line.
func (d Difference) String() string {
	return fmt.Sprintf("%q: %s differs: want %s, got %s", d.Path, d.What, d.Want, d.Got)
}

// node is one lstat'ed path of a tree.
type node struct {
	abs string
	st  unix.Stat_t
}

// tree is the result of scanning one root.
type tree struct {
	root  string
	nodes map[string]*node
	// groups maps an inode (dev, ino) of a non-directory to its paths.
	groups map[[2]uint64][]string
}

// Compare walks want and got and returns every difference, sorted by path
// (a directory before its contents). Below a path reported missing or of
// another type nothing more is reported. An error is returned only when a
// tree cannot be read, for example a file without read permission when not
// running as root.
func Compare(want, got string, opts Options) ([]Difference, error) {
	w, err := scan(want, opts)
	if err != nil {
		return nil, err
	}
	g, err := scan(got, opts)
	if err != nil {
		return nil, err
	}
	paths := make([]string, 0, len(w.nodes)+len(g.nodes))
	for p := range w.nodes {
		paths = append(paths, p)
	}
	for p := range g.nodes {
		if _, ok := w.nodes[p]; !ok {
			paths = append(paths, p)
		}
	}
	// Sort so that a directory comes right before its contents.
	sort.Slice(paths, func(i, j int) bool { return pathLess(paths[i], paths[j]) })

	c := &comparer{opts: opts, w: w, g: g, pruned: map[string]bool{}}
	for _, p := range paths {
		if c.underPruned(p) {
			continue
		}
		if err := c.compare(p); err != nil {
			return nil, err
		}
	}
	return c.diffs, nil
}

// pathLess orders slash-separated paths component by component.
func pathLess(a, b string) bool {
	if a == "." || b == "." {
		return a == "." && b != "."
	}
	return slices.Compare(strings.Split(a, "/"), strings.Split(b, "/")) < 0
}

// scan lstats every path below root.
func scan(root string, opts Options) (*tree, error) {
	t := &tree{root: root, nodes: map[string]*node{}, groups: map[[2]uint64][]string{}}
	var st unix.Stat_t
	if err := unix.Lstat(root, &st); err != nil {
		return nil, fmt.Errorf("treecmp: stat root %s: %w", root, err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFDIR {
		return nil, fmt.Errorf("treecmp: root %s is not a directory", root)
	}
	if err := t.walk(".", root, opts); err != nil {
		return nil, err
	}
	for _, paths := range t.groups {
		slices.Sort(paths)
	}
	return t, nil
}

// walk records rel (at abs) and, for directories, its children.
func (t *tree) walk(rel, abs string, opts Options) error {
	if opts.IgnorePath != nil && opts.IgnorePath(rel) {
		return nil
	}
	n := &node{abs: abs}
	if err := unix.Lstat(abs, &n.st); err != nil {
		return fmt.Errorf("treecmp: stat %s: %w", abs, err)
	}
	t.nodes[rel] = n
	if n.st.Mode&unix.S_IFMT != unix.S_IFDIR {
		key := [2]uint64{n.st.Dev, n.st.Ino}
		t.groups[key] = append(t.groups[key], rel)
		return nil
	}
	f, err := os.Open(abs)
	if err != nil {
		return fmt.Errorf("treecmp: open directory %s: %w", abs, err)
	}
	names, err := f.Readdirnames(-1)
	f.Close()
	if err != nil {
		return fmt.Errorf("treecmp: read directory %s: %w", abs, err)
	}
	for _, name := range names {
		childRel := name
		if rel != "." {
			childRel = rel + "/" + name
		}
		if err := t.walk(childRel, abs+"/"+name, opts); err != nil {
			return err
		}
	}
	return nil
}

// comparer accumulates differences.
type comparer struct {
	opts   Options
	w, g   *tree
	pruned map[string]bool // paths whose subtrees are not compared
	diffs  []Difference
}

func (c *comparer) add(path, what, want, got string) {
	c.diffs = append(c.diffs, Difference{Path: path, What: what, Want: want, Got: got})
}

// underPruned reports whether an ancestor of p was reported as missing or
// of another type; its descendants are then implied differences.
func (c *comparer) underPruned(p string) bool {
	for i := strings.LastIndexByte(p, '/'); i > 0; i = strings.LastIndexByte(p[:i], '/') {
		if c.pruned[p[:i]] {
			return true
		}
	}
	return false
}

// compare checks one path present in at least one tree.
func (c *comparer) compare(p string) error {
	wn, gn := c.w.nodes[p], c.g.nodes[p]
	switch {
	case gn == nil:
		c.add(p, WhatPresence, "present ("+typeName(wn.st.Mode)+")", "missing")
		c.pruned[p] = true
		return nil
	case wn == nil:
		c.add(p, WhatPresence, "missing", "present ("+typeName(gn.st.Mode)+")")
		c.pruned[p] = true
		return nil
	}
	ws, gs := &wn.st, &gn.st
	typ := ws.Mode & unix.S_IFMT
	if typ != gs.Mode&unix.S_IFMT {
		c.add(p, WhatType, typeName(ws.Mode), typeName(gs.Mode))
		c.pruned[p] = true
		return nil
	}
	if wp, gp := ws.Mode&0o7777, gs.Mode&0o7777; wp != gp {
		c.add(p, WhatMode, fmt.Sprintf("%04o", wp), fmt.Sprintf("%04o", gp))
	}
	if !c.opts.IgnoreOwner {
		if ws.Uid != gs.Uid {
			c.add(p, WhatUID, strconv.FormatUint(uint64(ws.Uid), 10), strconv.FormatUint(uint64(gs.Uid), 10))
		}
		if ws.Gid != gs.Gid {
			c.add(p, WhatGID, strconv.FormatUint(uint64(ws.Gid), 10), strconv.FormatUint(uint64(gs.Gid), 10))
		}
	}
	if ws.Nlink != gs.Nlink && !(typ == unix.S_IFDIR && c.opts.IgnoreDirNlink) {
		c.add(p, WhatNlink, strconv.FormatUint(ws.Nlink, 10), strconv.FormatUint(gs.Nlink, 10))
	}
	if typ == unix.S_IFREG && ws.Size != gs.Size {
		c.add(p, WhatSize, strconv.FormatInt(ws.Size, 10), strconv.FormatInt(gs.Size, 10))
	}
	c.compareMtime(p, typ, ws.Mtim, gs.Mtim)
	switch typ {
	case unix.S_IFREG:
		if ws.Size == gs.Size && ws.Size > 0 {
			if err := c.compareContent(p, wn.abs, gn.abs, ws.Size); err != nil {
				return err
			}
		}
	case unix.S_IFLNK:
		wt, err := os.Readlink(wn.abs)
		if err != nil {
			return fmt.Errorf("treecmp: read symlink %s: %w", wn.abs, err)
		}
		gt, err := os.Readlink(gn.abs)
		if err != nil {
			return fmt.Errorf("treecmp: read symlink %s: %w", gn.abs, err)
		}
		if wt != gt {
			c.add(p, WhatTarget, strconv.Quote(wt), strconv.Quote(gt))
		}
	case unix.S_IFCHR, unix.S_IFBLK:
		if ws.Rdev != gs.Rdev {
			c.add(p, WhatRdev, devString(ws.Rdev), devString(gs.Rdev))
		}
	}
	if err := c.compareXattrs(p, wn.abs, gn.abs); err != nil {
		return err
	}
	if typ != unix.S_IFDIR {
		wg := c.w.groups[[2]uint64{ws.Dev, ws.Ino}]
		gg := c.g.groups[[2]uint64{gs.Dev, gs.Ino}]
		if !slices.Equal(wg, gg) {
			c.add(p, WhatHardlink, groupString(wg), groupString(gg))
		}
	}
	return nil
}

// compareMtime applies the mtime options.
func (c *comparer) compareMtime(p string, typ uint32, w, g unix.Timespec) {
	switch {
	case c.opts.IgnoreMtime,
		typ == unix.S_IFDIR && c.opts.IgnoreDirMtime,
		typ == unix.S_IFLNK && c.opts.IgnoreSymlinkMtime:
		return
	}
	if c.opts.MtimeSeconds {
		if w.Sec != g.Sec {
			c.add(p, WhatMtime, timeString(w), timeString(g))
		}
		return
	}
	if w != g {
		c.add(p, WhatMtime, timeString(w), timeString(g))
	}
}

// ignoredXattr applies Options.IgnoreXattrs.
func (c *comparer) ignoredXattr(name string) bool {
	for _, pat := range c.opts.IgnoreXattrs {
		if prefix, ok := strings.CutSuffix(pat, "*"); ok {
			if strings.HasPrefix(name, prefix) {
				return true
			}
		} else if name == pat {
			return true
		}
	}
	return false
}

// compareXattrs reports every attribute that is missing, extra or
// different.
func (c *comparer) compareXattrs(p, wantAbs, gotAbs string) error {
	wx, err := xattrs(wantAbs)
	if err != nil {
		return err
	}
	gx, err := xattrs(gotAbs)
	if err != nil {
		return err
	}
	names := make([]string, 0, len(wx)+len(gx))
	for n := range wx {
		names = append(names, n)
	}
	for n := range gx {
		if _, ok := wx[n]; !ok {
			names = append(names, n)
		}
	}
	slices.Sort(names)
	for _, n := range names {
		if c.ignoredXattr(n) {
			continue
		}
		wv, wok := wx[n]
		gv, gok := gx[n]
		if wok == gok && bytes.Equal(wv, gv) {
			continue
		}
		c.add(p, WhatXattr, xattrString(n, wv, wok), xattrString(n, gv, gok))
	}
	return nil
}

// xattrs returns every extended attribute of path (not following symlinks).
// Filesystems without xattr support yield none.
func xattrs(path string) (map[string][]byte, error) {
	var list []byte
	for size := 256; ; size *= 4 {
		buf := make([]byte, size)
		n, err := unix.Llistxattr(path, buf)
		if errors.Is(err, unix.ERANGE) {
			continue
		}
		if errors.Is(err, unix.ENOTSUP) {
			return nil, nil
		}
		if err != nil {
			return nil, fmt.Errorf("treecmp: list xattrs of %s: %w", path, err)
		}
		list = buf[:n]
		break
	}
	out := map[string][]byte{}
	for _, name := range strings.Split(string(list), "\x00") {
		if name == "" {
			continue
		}
		v, ok, err := getxattr(path, name)
		if err != nil {
			return nil, err
		}
		if ok {
			out[name] = v
		}
	}
	return out, nil
}

// getxattr reads one attribute; ok is false when it vanished meanwhile.
func getxattr(path, name string) (v []byte, ok bool, err error) {
	for size := 256; ; size *= 4 {
		buf := make([]byte, size)
		n, err := unix.Lgetxattr(path, name, buf)
		if errors.Is(err, unix.ERANGE) && size < 1<<24 {
			continue
		}
		if errors.Is(err, unix.ENODATA) {
			return nil, false, nil
		}
		if err != nil {
			return nil, false, fmt.Errorf("treecmp: get xattr %s of %s: %w", name, path, err)
		}
		return buf[:n], true, nil
	}
}

// chunkSize is the read size of content comparison.
const chunkSize = 1 << 20

// compareContent compares two regular files of the same size.
func (c *comparer) compareContent(p, wantAbs, gotAbs string, size int64) error {
	wf, err := os.Open(wantAbs)
	if err != nil {
		return fmt.Errorf("treecmp: open %s: %w", wantAbs, err)
	}
	defer wf.Close()
	gf, err := os.Open(gotAbs)
	if err != nil {
		return fmt.Errorf("treecmp: open %s: %w", gotAbs, err)
	}
	defer gf.Close()

	off, err := firstDifference(wf, gf, size)
	if err != nil {
		return err
	}
	if off < 0 {
		return nil
	}
	wsum, err := digest(wf, true)
	if err != nil {
		return err
	}
	gsum, err := digest(gf, false)
	if err != nil {
		return err
	}
	c.add(p, WhatContent, wsum, fmt.Sprintf("%s (first difference at byte %d)", gsum, off))
	return nil
}

// segments calls fn for consecutive ranges of f covering [0, size), each
// flagged as data or hole. Holes are only reported when holeAware is set
// and the filesystem supports SEEK_DATA/SEEK_HOLE; otherwise everything is
// data.
func segments(f *os.File, size int64, holeAware bool, fn func(start, end int64, data bool) error) error {
	fd := int(f.Fd())
	for off := int64(0); off < size; {
		if !holeAware {
			return fn(off, size, true)
		}
		dataStart, err := unix.Seek(fd, off, unix.SEEK_DATA)
		switch {
		case errors.Is(err, unix.ENXIO):
			// No data after off: the rest is a hole.
			return fn(off, size, false)
		case err != nil:
			// SEEK_DATA unsupported: read everything.
			holeAware = false
			continue
		}
		if dataStart > off {
			if err := fn(off, min(dataStart, size), false); err != nil {
				return err
			}
			off = min(dataStart, size)
			continue
		}
		holeStart, err := unix.Seek(fd, off, unix.SEEK_HOLE)
		if err != nil {
			holeAware = false
			continue
		}
		end := min(holeStart, size)
		if end <= off {
			end = size
		}
		if err := fn(off, end, true); err != nil {
			return err
		}
		off = end
	}
	return nil
}

var zeros = make([]byte, chunkSize)

// firstDifference returns the offset of the first differing byte of want
// and got, or -1 when they are equal over size bytes. Holes of want are
// not read; the matching ranges of got are read and must be zero. A got
// file shorter than size differs at its end.
func firstDifference(want, got *os.File, size int64) (int64, error) {
	wbuf := make([]byte, chunkSize)
	gbuf := make([]byte, chunkSize)
	first := int64(-1)
	errFound := errors.New("found")
	err := segments(want, size, true, func(start, end int64, data bool) error {
		for off := start; off < end; {
			n := int(min(int64(chunkSize), end-off))
			gn, err := got.ReadAt(gbuf[:n], off)
			if err != nil && !errors.Is(err, io.EOF) {
				return fmt.Errorf("treecmp: read %s at %d: %w", got.Name(), off, err)
			}
			// Drop the pages just read: a 4 GiB sparse file would otherwise
			// fill the page cache with zero pages, and recycling a small
			// set of pages is several times faster than allocating fresh
			// ones (notably in a VM). Correctness does not depend on it.
			_ = unix.Fadvise(int(got.Fd()), off, int64(n), unix.FADV_DONTNEED)
			ref := zeros[:n]
			if data {
				if _, err := want.ReadAt(wbuf[:n], off); err != nil {
					return fmt.Errorf("treecmp: read %s at %d: %w", want.Name(), off, err)
				}
				ref = wbuf[:n]
			}
			if gn < n || !bytes.Equal(ref, gbuf[:n]) {
				for i := 0; i < gn; i++ {
					if ref[i] != gbuf[i] {
						first = off + int64(i)
						return errFound
					}
				}
				first = off + int64(gn)
				return errFound
			}
			off += int64(n)
		}
		return nil
	})
	if err != nil && err != errFound {
		return 0, err
	}
	return first, nil
}

// digest returns "sha256:<hex>" of f's whole content, feeding zeros for
// holes instead of reading them when holeAware is set.
func digest(f *os.File, holeAware bool) (string, error) {
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil {
		return "", fmt.Errorf("treecmp: stat %s: %w", f.Name(), err)
	}
	h := sha256.New()
	buf := make([]byte, chunkSize)
	err := segments(f, st.Size, holeAware, func(start, end int64, data bool) error {
		if !data {
			for n := end - start; n > 0; n -= min(n, chunkSize) {
				h.Write(zeros[:min(n, chunkSize)])
			}
			return nil
		}
		_, err := io.CopyBuffer(h, io.NewSectionReader(f, start, end-start), buf)
		if err != nil {
			return fmt.Errorf("treecmp: read %s: %w", f.Name(), err)
		}
		return nil
	})
	if err != nil {
		return "", err
	}
	return "sha256:" + hex.EncodeToString(h.Sum(nil)), nil
}

// typeName names the file type in mode.
func typeName(mode uint32) string {
	switch mode & unix.S_IFMT {
	case unix.S_IFREG:
		return "regular file"
	case unix.S_IFDIR:
		return "directory"
	case unix.S_IFLNK:
		return "symlink"
	case unix.S_IFIFO:
		return "fifo"
	case unix.S_IFSOCK:
		return "socket"
	case unix.S_IFCHR:
		return "char device"
	case unix.S_IFBLK:
		return "block device"
	}
	return fmt.Sprintf("unknown type %#o", mode&unix.S_IFMT)
}

// devString formats a device number as major:minor.
func devString(rdev uint64) string {
	return fmt.Sprintf("%d:%d", unix.Major(rdev), unix.Minor(rdev))
}

// timeString formats a timestamp as RFC 3339 with nanoseconds and as raw
// seconds.nanoseconds.
func timeString(ts unix.Timespec) string {
	t := time.Unix(ts.Sec, ts.Nsec).UTC()
	return fmt.Sprintf("%s (%d.%09d)", t.Format(time.RFC3339Nano), ts.Sec, ts.Nsec)
}

// groupString formats a hardlink group.
func groupString(paths []string) string {
	q := make([]string, len(paths))
	for i, p := range paths {
		q[i] = strconv.Quote(p)
	}
	return "[" + strings.Join(q, " ") + "]"
}

// xattrString formats one attribute for a Difference.
func xattrString(name string, v []byte, ok bool) string {
	if !ok {
		return name + " (absent)"
	}
	if len(v) <= 64 && utf8.Valid(v) && !bytes.ContainsFunc(v, func(r rune) bool { return !strconv.IsPrint(r) }) {
		return name + "=" + strconv.Quote(string(v))
	}
	sum := sha256.Sum256(v)
	return fmt.Sprintf("%s=<%d bytes, sha256:%x>", name, len(v), sum[:8])
}

// Expect fails t for every difference between the trees want and got, and
// stops it if they cannot be compared.
func Expect(t testing.TB, want, got string, opts Options) {
	t.Helper()
	diffs, err := Compare(want, got, opts)
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range diffs {
		t.Error(d)
	}
}
