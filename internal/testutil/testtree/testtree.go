// Package testtree creates a deterministic directory tree that exercises
// every feature an EROFS image builder has to preserve.
//
// The tree produced by [Generate] contains regular files whose sizes sit on
// and around block boundaries, data with repeated 1 MiB regions (work for
// chunk deduplication), sparse files (one of them just over 4 GiB when
// [Options.Big] is set), a directory whose dirents span many 4096-byte
// blocks, 255-byte and unusual names, deep nesting, every kind of symlink,
// hardlink groups, empty directories, a FIFO and a socket, and, when running
// as root, device nodes (including numbers that need the new dev_t
// encoding), uid/gid values above 65535 and trusted.* and
// security.capability xattrs. Permission bits include setuid, setgid,
// sticky, 0000 and 0777; modification times carry nanoseconds and include
// values before 1970 and in 2100.
//
// Everything is derived from constants: two calls with the same [Options] on
// the same kind of filesystem produce trees that compare equal, attribute
// for attribute, including mtimes. The returned [Manifest] lists every path
// together with the features it exercises, so tests can assert coverage and
// look up example paths.
//
// Real disk use stays well below 20 MiB: the sparse files are created with
// truncate and a few small writes, so they stay sparse on filesystems that
// support holes.
package testtree

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// RootMode selects whether the features that need root privileges
// (device nodes, foreign ownership, trusted.* and security.* xattrs) are
// generated.
type RootMode int

const (
	// RootAuto generates the root-only features when the effective uid is 0.
	RootAuto RootMode = iota
	// RootOn always generates them; Generate fails when it lacks privileges.
	RootOn
	// RootOff never generates them, even when running as root. This yields
	// the same tree an unprivileged user gets.
	RootOff
)

// Options tunes [Generate].
type Options struct {
	// Big adds a sparse file of just over 4 GiB (a few bytes of data near
	// the end and across the 4 GiB boundary). It is off by default because
	// copying it through tools that do not keep holes (tar round trips,
	// plain readers) is slow.
	Big bool
	// Root selects whether root-only features are generated; the zero value
	// is RootAuto.
	Root RootMode
	// SkipNonUTF8Names leaves out the file whose name is not valid UTF-8,
	// for consumers (some archive formats) that cannot carry such names.
	SkipNonUTF8Names bool
}

// Feature names one property of the tree that an image builder must
// preserve.
type Feature string

// Features exercised by the generated tree. Each [Entry] lists the features
// it carries; [Manifest.Paths] finds the entries carrying one.
const (
	FeatureEmptyFile      Feature = "empty-file"       // regular file of size 0
	FeatureSmallFile      Feature = "small-file"       // sizes 1 and 100: inline (tail-packed) data
	FeatureBlockBoundary  Feature = "block-boundary"   // sizes 4095, 4096, 4097, 8192
	FeatureMultiBlock     Feature = "multi-block"      // sizes 12345 and 100000
	FeatureDedupe         Feature = "dedupe"           // identical 1 MiB regions within and across files
	FeatureZeroData       Feature = "zero-data"        // written (not sparse) zero blocks
	FeatureSparse         Feature = "sparse"           // file with holes
	FeatureBigSparse      Feature = "big-sparse"       // sparse file larger than 4 GiB (Options.Big)
	FeatureLargeDir       Feature = "large-dir"        // directory whose dirents span many blocks
	FeatureLongName       Feature = "long-name"        // 255-byte name
	FeatureSpecialName    Feature = "special-name"     // spaces, quotes, control characters
	FeatureUTF8Name       Feature = "utf8-name"        // non-ASCII UTF-8 name
	FeatureNonUTF8Name    Feature = "non-utf8-name"    // name that is not valid UTF-8
	FeatureDotName        Feature = "dot-name"         // name with a leading dot
	FeatureDeepNesting    Feature = "deep-nesting"     // many directory levels
	FeatureLongPath       Feature = "long-path"        // path longer than 2000 bytes
	FeatureSymlink        Feature = "symlink"          // any symlink
	FeatureDanglingLink   Feature = "dangling-symlink" // symlink to nothing
	FeatureAbsoluteLink   Feature = "absolute-symlink" // symlink with an absolute target
	FeatureLongLink       Feature = "long-symlink"     // symlink with a 4000-byte target
	FeatureHardlink       Feature = "hardlink"         // one of several names of one inode
	FeatureEmptyDir       Feature = "empty-dir"        // directory without entries
	FeatureFIFO           Feature = "fifo"             // named pipe
	FeatureSocket         Feature = "socket"           // unix socket file
	FeatureCharDevice     Feature = "char-device"      // character device node (root)
	FeatureBlockDevice    Feature = "block-device"     // block device node (root)
	FeatureLargeDevNumber Feature = "large-dev-number" // major or minor above 255 (root)
	FeatureOwnership      Feature = "ownership"        // uid/gid set explicitly (root)
	FeatureLargeID        Feature = "large-id"         // uid or gid above 65535 (root)
	FeatureUserXattr      Feature = "user-xattr"       // user.* extended attribute
	FeatureSharedXattr    Feature = "shared-xattr"     // xattr repeated on 20 files
	FeatureLargeXattr     Feature = "large-xattr"      // xattr value of 1 KiB
	FeatureEmptyXattr     Feature = "empty-xattr"      // xattr with an empty value
	FeatureManyXattrs     Feature = "many-xattrs"      // file with many xattrs
	FeatureTrustedXattr   Feature = "trusted-xattr"    // trusted.* xattr (root)
	FeatureSymlinkXattr   Feature = "symlink-xattr"    // xattr on a symlink (root)
	FeatureCapability     Feature = "capability"       // security.capability v2 (root)
	FeatureSetuid         Feature = "setuid"           // mode has S_ISUID
	FeatureSetgid         Feature = "setgid"           // mode has S_ISGID
	FeatureSticky         Feature = "sticky"           // mode has S_ISVTX
	FeatureMode0000       Feature = "mode-0000"        // no permission bits
	FeatureMode0777       Feature = "mode-0777"        // all rwx bits
	FeatureNanoMtime      Feature = "nano-mtime"       // mtime with non-zero nanoseconds
	FeatureEpochMtime     Feature = "epoch-mtime"      // mtime exactly 0
	FeaturePre1970Mtime   Feature = "pre-1970-mtime"   // negative mtime
	FeatureY2038Mtime     Feature = "y2038-mtime"      // mtime beyond 2^31-1 seconds
	FeatureFarMtime       Feature = "far-future-mtime" // mtime in the year 2100
	FeatureDirMtime       Feature = "dir-mtime"        // directory with an explicit mtime
	FeatureSymlinkMtime   Feature = "symlink-mtime"    // symlink with an explicit mtime
)

// AllFeatures lists every feature [Generate] can produce, in a stable order.
func AllFeatures() []Feature {
	return []Feature{
		FeatureEmptyFile, FeatureSmallFile, FeatureBlockBoundary, FeatureMultiBlock,
		FeatureDedupe, FeatureZeroData, FeatureSparse, FeatureBigSparse, FeatureLargeDir,
		FeatureLongName, FeatureSpecialName, FeatureUTF8Name, FeatureNonUTF8Name,
		FeatureDotName, FeatureDeepNesting, FeatureLongPath, FeatureSymlink,
		FeatureDanglingLink, FeatureAbsoluteLink, FeatureLongLink, FeatureHardlink,
		FeatureEmptyDir, FeatureFIFO, FeatureSocket, FeatureCharDevice, FeatureBlockDevice,
		FeatureLargeDevNumber, FeatureOwnership, FeatureLargeID, FeatureUserXattr,
		FeatureSharedXattr, FeatureLargeXattr, FeatureEmptyXattr, FeatureManyXattrs,
		FeatureTrustedXattr, FeatureSymlinkXattr, FeatureCapability, FeatureSetuid,
		FeatureSetgid, FeatureSticky, FeatureMode0000, FeatureMode0777, FeatureNanoMtime,
		FeatureEpochMtime, FeaturePre1970Mtime, FeatureY2038Mtime, FeatureFarMtime,
		FeatureDirMtime, FeatureSymlinkMtime,
	}
}

// RootFeatures lists the features that are generated only with root
// privileges (see [RootMode]).
func RootFeatures() []Feature {
	return []Feature{
		FeatureCharDevice, FeatureBlockDevice, FeatureLargeDevNumber, FeatureOwnership,
		FeatureLargeID, FeatureTrustedXattr, FeatureSymlinkXattr, FeatureCapability,
	}
}

// Entry describes one path of the generated tree.
type Entry struct {
	// Path is relative to the tree's root, slash-separated; the root
	// itself is ".".
	Path string
	// Type holds the fs.ModeType bits of the entry (0 for a regular file).
	Type fs.FileMode
	// Size is the apparent size of regular files and 0 for other types.
	Size int64
	// Features lists the features this entry exercises.
	Features []Feature
}

// Manifest records what [Generate] created.
type Manifest struct {
	// Root is the directory the tree was generated in.
	Root string
	// RootFeatures tells whether root-only features were generated.
	RootFeatures bool
	// Entries lists every path of the tree, root included, sorted by Path.
	Entries []Entry
	// Skipped maps features that could not be produced to the reason,
	// e.g. a filesystem that rejects user xattrs or clamps timestamps,
	// or root-only features when not generating them.
	Skipped map[Feature]string
}

// Has reports whether at least one entry carries f.
func (m *Manifest) Has(f Feature) bool {
	return len(m.Paths(f)) > 0
}

// Paths returns the paths of the entries carrying f, in sorted order.
func (m *Manifest) Paths(f Feature) []string {
	var out []string
	for _, e := range m.Entries {
		if slices.Contains(e.Features, f) {
			out = append(out, e.Path)
		}
	}
	return out
}

// Lookup returns the entry for path p.
func (m *Manifest) Lookup(p string) (Entry, bool) {
	i := sort.Search(len(m.Entries), func(i int) bool { return m.Entries[i].Path >= p })
	if i < len(m.Entries) && m.Entries[i].Path == p {
		return m.Entries[i], true
	}
	return Entry{}, false
}

// Constants describing generated content, exported so tests can refer to
// them without hard-coding numbers.
const (
	// LargeDirEntries is the number of entries in the large directory.
	LargeDirEntries = 600
	// DeepLevels is the number of nested directories under "deep".
	DeepLevels = 40
	// SharedXattrFiles is the number of files carrying the shared xattr.
	SharedXattrFiles = 20
	// BigSparseSize is the apparent size of the big sparse file.
	BigSparseSize = 4<<30 + 8192 + 17
	// LongLinkTargetLen is the length of the long symlink target.
	LongLinkTargetLen = 4000
)

// baseTime is the mtime of the first entry; later entries get later times.
const baseTime = 1_600_000_000

// Generate creates the test tree in dir, which must be missing or empty,
// and returns its manifest. Root-only features are generated according to
// opts.Root. Features the filesystem under dir cannot represent (user
// xattrs, timestamps out of range) are recorded in Manifest.Skipped instead
// of failing, as are root-only features when they are not generated.
func Generate(dir string, opts Options) (*Manifest, error) {
	root := os.Geteuid() == 0
	switch opts.Root {
	case RootOn:
		root = true
	case RootOff:
		root = false
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, fmt.Errorf("testtree: resolve %q: %w", dir, err)
	}
	if err := prepareRoot(abs); err != nil {
		return nil, err
	}
	g := &gen{
		root:    abs,
		opts:    opts,
		m:       &Manifest{Root: abs, RootFeatures: root, Skipped: map[Feature]string{}},
		entries: map[string]*Entry{},
		dirTime: map[string]unix.Timespec{},
	}
	if !root {
		for _, f := range RootFeatures() {
			g.m.Skipped[f] = "root-only feature not generated (not root or Options.Root is RootOff)"
		}
	}
	if !opts.Big {
		g.m.Skipped[FeatureBigSparse] = "Options.Big not set"
	}
	if opts.SkipNonUTF8Names {
		g.m.Skipped[FeatureNonUTF8Name] = "Options.SkipNonUTF8Names set"
	}
	steps := []func() error{
		g.rootDir,
		g.files,
		g.sparse,
		g.largeDir,
		g.names,
		g.deep,
		g.links,
		g.hardlinks,
		g.emptyDirs,
		g.special,
		g.modes,
		g.xattrs,
		g.times,
	}
	if root {
		steps = append(steps, g.devices, g.owners, g.privilegedXattrs)
	}
	steps = append(steps, g.finishDirs)
	for _, step := range steps {
		if err := step(); err != nil {
			return nil, err
		}
	}
	for _, e := range g.entries {
		slices.Sort(e.Features)
		e.Features = slices.Compact(e.Features)
		g.m.Entries = append(g.m.Entries, *e)
	}
	sort.Slice(g.m.Entries, func(i, j int) bool { return g.m.Entries[i].Path < g.m.Entries[j].Path })
	for _, f := range AllFeatures() {
		// A feature some entry exercises is not skipped, even if
		// another attempt at it failed (say, one of two old timestamps).
		if g.m.Has(f) {
			delete(g.m.Skipped, f)
		}
		if _, skipped := g.m.Skipped[f]; !skipped && !g.m.Has(f) {
			return nil, fmt.Errorf("testtree: internal error: feature %s neither produced nor skipped", f)
		}
	}
	return g.m, nil
}

// prepareRoot makes sure dir exists and is empty.
func prepareRoot(dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("testtree: create root %s: %w", dir, err)
	}
	f, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("testtree: open root %s: %w", dir, err)
	}
	defer f.Close()
	names, err := f.Readdirnames(1)
	if err != nil && !errors.Is(err, io.EOF) {
		return fmt.Errorf("testtree: read root %s: %w", dir, err)
	}
	if len(names) > 0 {
		return fmt.Errorf("testtree: root %s is not empty (contains %q)", dir, names[0])
	}
	return nil
}

// gen holds the state of one Generate call.
type gen struct {
	root    string
	opts    Options
	m       *Manifest
	entries map[string]*Entry
	seq     int64                    // counter for default mtimes
	dirs    []string                 // directories, in creation order
	dirTime map[string]unix.Timespec // mtime to apply to each directory at the end
}

// abs returns the absolute path of rel.
func (g *gen) abs(rel string) string {
	if rel == "." {
		return g.root
	}
	return g.root + "/" + rel
}

// nextTime returns a fresh deterministic timestamp with nanoseconds.
func (g *gen) nextTime() unix.Timespec {
	g.seq++
	return unix.Timespec{Sec: baseTime + g.seq*3607, Nsec: (g.seq * 7_919_113) % 1_000_000_000}
}

// record adds rel to the manifest, merging features for known paths.
func (g *gen) record(rel string, typ fs.FileMode, size int64, features ...Feature) {
	e, ok := g.entries[rel]
	if !ok {
		e = &Entry{Path: rel, Type: typ, Size: size}
		g.entries[rel] = e
	}
	e.Features = append(e.Features, features...)
}

// tag adds features to an existing entry.
func (g *gen) tag(rel string, features ...Feature) {
	g.entries[rel].Features = append(g.entries[rel].Features, features...)
}

// wrap adds context to an error from an operation on rel.
func (g *gen) wrap(op, rel string, err error) error {
	return fmt.Errorf("testtree: %s %q: %w", op, rel, err)
}

// mkdir creates directory rel with permission bits perm (chmod'ed, so the
// umask does not apply). Its mtime is set by finishDirs.
func (g *gen) mkdir(rel string, perm uint32, features ...Feature) error {
	if rel != "." {
		if err := unix.Mkdir(g.abs(rel), 0o700); err != nil {
			return g.wrap("mkdir", rel, err)
		}
	}
	if err := unix.Chmod(g.abs(rel), perm); err != nil {
		return g.wrap("chmod", rel, err)
	}
	g.dirs = append(g.dirs, rel)
	g.dirTime[rel] = g.nextTime()
	g.record(rel, fs.ModeDir, 0, features...)
	return nil
}

// file creates regular file rel with the given content, mode and a default
// mtime.
func (g *gen) file(rel string, data []byte, perm uint32, features ...Feature) error {
	f, err := os.OpenFile(g.abs(rel), os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return g.wrap("create", rel, err)
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return g.wrap("write", rel, err)
	}
	if err := f.Close(); err != nil {
		return g.wrap("close", rel, err)
	}
	if err := unix.Chmod(g.abs(rel), perm); err != nil {
		return g.wrap("chmod", rel, err)
	}
	g.record(rel, 0, int64(len(data)), features...)
	return g.touch(rel, g.nextTime())
}

// sparseFile creates rel with apparent size size and data only at the
// given offsets; everything else is a hole.
func (g *gen) sparseFile(rel string, size int64, writes map[int64][]byte, features ...Feature) error {
	f, err := os.OpenFile(g.abs(rel), os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return g.wrap("create", rel, err)
	}
	defer f.Close()
	if err := f.Truncate(size); err != nil {
		return g.wrap("truncate", rel, err)
	}
	offs := make([]int64, 0, len(writes))
	for off := range writes {
		offs = append(offs, off)
	}
	slices.Sort(offs)
	for _, off := range offs {
		if _, err := f.WriteAt(writes[off], off); err != nil {
			return g.wrap(fmt.Sprintf("write at %d", off), rel, err)
		}
	}
	if err := f.Close(); err != nil {
		return g.wrap("close", rel, err)
	}
	if err := unix.Chmod(g.abs(rel), 0o644); err != nil {
		return g.wrap("chmod", rel, err)
	}
	g.record(rel, 0, size, features...)
	return g.touch(rel, g.nextTime())
}

// symlink creates symlink rel pointing to target with a default mtime.
func (g *gen) symlink(rel, target string, features ...Feature) error {
	if err := unix.Symlink(target, g.abs(rel)); err != nil {
		return g.wrap("symlink", rel, err)
	}
	g.record(rel, fs.ModeSymlink, 0, append(features, FeatureSymlink)...)
	return g.touch(rel, g.nextTime())
}

// link makes newRel another name of existing file oldRel.
func (g *gen) link(oldRel, newRel string) error {
	if err := unix.Linkat(unix.AT_FDCWD, g.abs(oldRel), unix.AT_FDCWD, g.abs(newRel), 0); err != nil {
		return g.wrap("link", newRel, err)
	}
	old := g.entries[oldRel]
	g.record(newRel, old.Type, old.Size, old.Features...)
	g.tag(oldRel, FeatureHardlink)
	g.tag(newRel, FeatureHardlink)
	return nil
}

// mknod creates a special file (FIFO, socket or device) with permission
// bits perm and a default mtime.
func (g *gen) mknod(rel string, typ uint32, perm uint32, major, minor uint32, features ...Feature) error {
	if err := unix.Mknod(g.abs(rel), typ|0o600, int(unix.Mkdev(major, minor))); err != nil {
		return g.wrap("mknod", rel, err)
	}
	if err := unix.Chmod(g.abs(rel), perm); err != nil {
		return g.wrap("chmod", rel, err)
	}
	var ft fs.FileMode
	switch typ {
	case unix.S_IFIFO:
		ft = fs.ModeNamedPipe
	case unix.S_IFSOCK:
		ft = fs.ModeSocket
	case unix.S_IFCHR:
		ft = fs.ModeDevice | fs.ModeCharDevice
	case unix.S_IFBLK:
		ft = fs.ModeDevice
	}
	g.record(rel, ft, 0, features...)
	return g.touch(rel, g.nextTime())
}

// touch sets the mtime (and atime) of rel without following symlinks.
// Directories get their times at the very end instead (see finishDirs).
func (g *gen) touch(rel string, ts unix.Timespec) error {
	if e, ok := g.entries[rel]; ok && e.Type == fs.ModeDir {
		g.dirTime[rel] = ts
		return nil
	}
	if err := unix.UtimesNanoAt(unix.AT_FDCWD, g.abs(rel), []unix.Timespec{ts, ts}, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return g.wrap("set mtime of", rel, err)
	}
	return nil
}

// chmod sets permission bits (after any chown, which clears setuid).
func (g *gen) chmod(rel string, perm uint32) error {
	if err := unix.Chmod(g.abs(rel), perm); err != nil {
		return g.wrap("chmod", rel, err)
	}
	return nil
}

// setxattr sets one extended attribute without following symlinks. When
// the filesystem does not support the namespace, the feature is recorded as
// skipped and skipped reports true.
func (g *gen) setxattr(rel, name string, value []byte, feature Feature) (skipped bool, err error) {
	err = unix.Lsetxattr(g.abs(rel), name, value, 0)
	if errors.Is(err, unix.ENOTSUP) {
		if _, ok := g.m.Skipped[feature]; !ok {
			g.m.Skipped[feature] = fmt.Sprintf("filesystem under %s rejects %s: %v", g.root, name, err)
		}
		return true, nil
	}
	if err != nil {
		return false, g.wrap("setxattr "+name+" on", rel, err)
	}
	return false, nil
}

// content returns n deterministic pseudo-random bytes for seed.
func content(seed uint64, n int) []byte {
	b := make([]byte, n+8)
	x := seed*0x9E3779B97F4A7C15 + 1
	for i := 0; i < n; i += 8 {
		// splitmix64
		x += 0x9E3779B97F4A7C15
		z := x
		z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9
		z = (z ^ (z >> 27)) * 0x94D049BB133111EB
		z ^= z >> 31
		binary.LittleEndian.PutUint64(b[i:], z)
	}
	return b[:n]
}

func (g *gen) rootDir() error {
	return g.mkdir(".", 0o755)
}

// files creates regular files of interesting sizes under files/.
func (g *gen) files() error {
	if err := g.mkdir("files", 0o755); err != nil {
		return err
	}
	sizes := []struct {
		n int
		f Feature
	}{
		{0, FeatureEmptyFile}, {1, FeatureSmallFile}, {100, FeatureSmallFile},
		{4095, FeatureBlockBoundary}, {4096, FeatureBlockBoundary},
		{4097, FeatureBlockBoundary}, {8192, FeatureBlockBoundary},
		{12345, FeatureMultiBlock}, {100000, FeatureMultiBlock},
	}
	for _, s := range sizes {
		if err := g.file(fmt.Sprintf("files/size-%d", s.n), content(uint64(s.n), s.n), 0o644, s.f); err != nil {
			return err
		}
	}
	// Deduplication: regions A A B and a tail in one file, B A in another.
	const mib = 1 << 20
	a, b := content(0xA, mib), content(0xB, mib)
	dedupe := slices.Concat(a, a, b, content(0xC, 777))
	if err := g.file("files/dedupe-3m", dedupe, 0o644, FeatureDedupe, FeatureMultiBlock); err != nil {
		return err
	}
	if err := g.file("files/dedupe-2m", slices.Concat(b, a), 0o644, FeatureDedupe, FeatureMultiBlock); err != nil {
		return err
	}
	// Written zeros: 64 KiB of zero blocks plus one data block in between.
	zeros := make([]byte, 65536)
	copy(zeros[32768:], content(0x2E, 4096))
	return g.file("files/zeros-64k", zeros, 0o644, FeatureZeroData)
}

// sparse creates files with holes under sparse/.
func (g *gen) sparse() error {
	if err := g.mkdir("sparse", 0o755); err != nil {
		return err
	}
	const mib = 1 << 20
	holesSize := int64(8*mib + 100)
	err := g.sparseFile("sparse/holes", holesSize, map[int64][]byte{
		0:                content(0x5A, 4096),
		5 * mib:          content(0x5B, 8192),
		5*mib + 3*4096:   content(0x5C, 10), // small data island inside a block
		holesSize - 4000: content(0x5D, 4000),
	}, FeatureSparse)
	if err != nil {
		return err
	}
	if err := g.sparseFile("sparse/hole-only", 1*mib, nil, FeatureSparse); err != nil {
		return err
	}
	if !g.opts.Big {
		return nil
	}
	return g.sparseFile("sparse/big-4g", BigSparseSize, map[int64][]byte{
		4<<30 - 5:          content(0x4A, 10), // straddles the 4 GiB boundary
		BigSparseSize - 64: content(0x4B, 64),
	}, FeatureSparse, FeatureBigSparse)
}

// largeDir creates a directory whose dirents span many blocks.
func (g *gen) largeDir() error {
	if err := g.mkdir("large-dir", 0o755, FeatureLargeDir); err != nil {
		return err
	}
	for i := range LargeDirEntries {
		name := fmt.Sprintf("%03d-%s", i, strings.Repeat(string(rune('a'+i%26)), (i*37)%251))
		rel := "large-dir/" + name
		var err error
		switch {
		case i%60 == 7:
			err = g.mkdir(rel, 0o755)
		case i%75 == 11:
			err = g.symlink(rel, "../files/size-1")
		default:
			err = g.file(rel, nil, 0o644)
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// names creates entries with long and unusual names.
func (g *gen) names() error {
	if err := g.mkdir("names", 0o755); err != nil {
		return err
	}
	long := strings.Repeat("long-name-", 25) + "12345"
	longUTF8 := strings.Repeat("é", 127) + "x"
	entries := []struct {
		name string
		f    []Feature
	}{
		{long, []Feature{FeatureLongName}},
		{longUTF8, []Feature{FeatureLongName, FeatureUTF8Name}},
		{"with space", []Feature{FeatureSpecialName}},
		{" leading and trailing space ", []Feature{FeatureSpecialName}},
		{"tab\there", []Feature{FeatureSpecialName}},
		{"new\nline", []Feature{FeatureSpecialName}},
		{`quote'double"back\slash`, []Feature{FeatureSpecialName}},
		{"-dash", []Feature{FeatureSpecialName}},
		{"#hash%percent*star?question[bracket]", []Feature{FeatureSpecialName}},
		{"ünïcødé-日本語-🙂", []Feature{FeatureUTF8Name}},
		{".hidden", []Feature{FeatureDotName}},
		{"..dotdot", []Feature{FeatureDotName}},
		{"...", []Feature{FeatureDotName}},
	}
	if !g.opts.SkipNonUTF8Names {
		entries = append(entries, struct {
			name string
			f    []Feature
		}{"latin1-caf\xe9", []Feature{FeatureNonUTF8Name}})
	}
	for i, e := range entries {
		if err := g.file("names/"+e.name, content(uint64(1000+i), 10+i), 0o644, e.f...); err != nil {
			return err
		}
	}
	if err := g.mkdir("names/.hidden-dir", 0o755, FeatureDotName); err != nil {
		return err
	}
	if err := g.file("names/.hidden-dir/inside", []byte("hidden\n"), 0o644); err != nil {
		return err
	}
	return g.mkdir("names/"+strings.Repeat("d", 255), 0o755, FeatureLongName)
}

// deep creates DeepLevels nested directories and a path of more than 2000
// bytes made of long components.
func (g *gen) deep() error {
	rel := "deep"
	if err := g.mkdir(rel, 0o755); err != nil {
		return err
	}
	for i := range DeepLevels {
		rel = fmt.Sprintf("%s/level-%02d", rel, i)
		if err := g.mkdir(rel, 0o755, FeatureDeepNesting); err != nil {
			return err
		}
	}
	if err := g.file(rel+"/leaf", []byte("deep leaf\n"), 0o644, FeatureDeepNesting); err != nil {
		return err
	}
	rel = "deep/long-path"
	if err := g.mkdir(rel, 0o755); err != nil {
		return err
	}
	for i := range 11 {
		rel = fmt.Sprintf("%s/%02d-%s", rel, i, strings.Repeat("p", 197))
		if err := g.mkdir(rel, 0o755); err != nil {
			return err
		}
	}
	return g.file(rel+"/leaf", []byte("long path leaf\n"), 0o644, FeatureLongPath)
}

// longTarget returns a LongLinkTargetLen-byte relative symlink target.
func longTarget() string {
	var b strings.Builder
	for i := 0; b.Len() < LongLinkTargetLen; i++ {
		fmt.Fprintf(&b, "component-%03d-%s/", i, strings.Repeat("x", 80))
	}
	return b.String()[:LongLinkTargetLen-1] + "z"
}

// links creates symlinks of every kind under links/.
func (g *gen) links() error {
	if err := g.mkdir("links", 0o755); err != nil {
		return err
	}
	if err := g.file("links/target", []byte("symlink target\n"), 0o644); err != nil {
		return err
	}
	links := []struct {
		name, target string
		f            []Feature
	}{
		{"short", "target", nil},
		{"relative", "../files/size-100", nil},
		{"to-dir", "../deep", nil},
		{"dangling", "no/such/file", []Feature{FeatureDanglingLink}},
		{"absolute", "/etc/hostname", []Feature{FeatureAbsoluteLink}},
		{"absolute-dangling", "/nonexistent/testtree/target", []Feature{FeatureAbsoluteLink, FeatureDanglingLink}},
		{"loop", "loop", []Feature{FeatureDanglingLink}},
		{"long", longTarget(), []Feature{FeatureLongLink, FeatureDanglingLink}},
		{"utf8-ünï", "ünïcødé-target", []Feature{FeatureUTF8Name, FeatureDanglingLink}},
	}
	for _, l := range links {
		if err := g.symlink("links/"+l.name, l.target, l.f...); err != nil {
			return err
		}
	}
	return nil
}

// hardlinks creates a group of three names for one file across directories
// and a pair of names for one empty file.
func (g *gen) hardlinks() error {
	for _, d := range []string{"hardlinks", "hardlinks/a", "hardlinks/b"} {
		if err := g.mkdir(d, 0o755); err != nil {
			return err
		}
	}
	if err := g.file("hardlinks/a/first", content(0x4C, 5000), 0o640); err != nil {
		return err
	}
	if err := g.link("hardlinks/a/first", "hardlinks/b/second"); err != nil {
		return err
	}
	if err := g.link("hardlinks/a/first", "hardlinks/third"); err != nil {
		return err
	}
	if err := g.file("hardlinks/empty-1", nil, 0o644, FeatureEmptyFile); err != nil {
		return err
	}
	return g.link("hardlinks/empty-1", "hardlinks/b/empty-2")
}

// emptyDirs creates empty directories, one of them nested.
func (g *gen) emptyDirs() error {
	if err := g.mkdir("empty", 0o755, FeatureEmptyDir); err != nil {
		return err
	}
	if err := g.mkdir("empty-parent", 0o700); err != nil {
		return err
	}
	return g.mkdir("empty-parent/empty-child", 0o555, FeatureEmptyDir)
}

// special creates a FIFO and a socket file (mknod S_IFSOCK works without
// privileges and, unlike bind(2), has no path length limit).
func (g *gen) special() error {
	if err := g.mkdir("special", 0o755); err != nil {
		return err
	}
	if err := g.mknod("special/fifo", unix.S_IFIFO, 0o644, 0, 0, FeatureFIFO); err != nil {
		return err
	}
	return g.mknod("special/socket", unix.S_IFSOCK, 0o755, 0, 0, FeatureSocket)
}

// modes creates files and directories with special permission bits.
func (g *gen) modes() error {
	if err := g.mkdir("modes", 0o755); err != nil {
		return err
	}
	// The 0000 file can only be read by root; keep it empty otherwise so
	// unprivileged builders and comparers can still process the tree.
	var secret []byte
	if g.m.RootFeatures {
		secret = content(0x0000, 333)
	}
	files := []struct {
		name string
		perm uint32
		data []byte
		f    []Feature
	}{
		{"setuid", 0o4755, []byte("#!/bin/true\n"), []Feature{FeatureSetuid}},
		{"setgid", 0o2755, []byte("#!/bin/true\n"), []Feature{FeatureSetgid}},
		{"setuid-setgid", 0o6711, []byte("#!/bin/true\n"), []Feature{FeatureSetuid, FeatureSetgid}},
		{"setgid-no-x", 0o2644, []byte("lock\n"), []Feature{FeatureSetgid}},
		{"sticky-file", 0o1644, []byte("sticky\n"), []Feature{FeatureSticky}},
		{"all-bits", 0o7777, []byte("all\n"), []Feature{FeatureSetuid, FeatureSetgid, FeatureSticky, FeatureMode0777}},
		{"mode-0000", 0, secret, []Feature{FeatureMode0000}},
		{"mode-0777", 0o777, []byte("open\n"), []Feature{FeatureMode0777}},
		{"mode-0400", 0o400, []byte("read only\n"), nil},
		{"mode-0123", 0o123, nil, nil},
	}
	for _, f := range files {
		if err := g.file("modes/"+f.name, f.data, f.perm, f.f...); err != nil {
			return err
		}
	}
	if err := g.mkdir("modes/sticky-dir", 0o1777, FeatureSticky, FeatureMode0777); err != nil {
		return err
	}
	if err := g.file("modes/sticky-dir/child", []byte("child\n"), 0o666); err != nil {
		return err
	}
	if err := g.mkdir("modes/setgid-dir", 0o2775, FeatureSetgid); err != nil {
		return err
	}
	return g.mknod("modes/fifo-0600", unix.S_IFIFO, 0o600, 0, 0, FeatureFIFO)
}

// sharedXattrValue is set identically on SharedXattrFiles files.
var sharedXattrValue = []byte("shared value: identical on every file of xattrs/shared (64 bytes)")

// xattrs creates files and directories with user.* xattrs. Features are
// only recorded when the filesystem accepted the attributes.
func (g *gen) xattrs() error {
	if err := g.mkdir("xattrs", 0o755); err != nil {
		return err
	}
	if err := g.file("xattrs/values", []byte("file with xattrs\n"), 0o644); err != nil {
		return err
	}
	large := content(0x1C, 1024)
	large[0], large[500] = 0, 0 // binary, with NUL bytes
	values := []struct {
		name  string
		value []byte
		f     []Feature
	}{
		{"user.a", []byte("1"), []Feature{FeatureUserXattr}},
		{"user.empty", nil, []Feature{FeatureEmptyXattr}},
		{"user.medium", bytes.Repeat([]byte("0123456789"), 10), nil},
		{"user.large", large, []Feature{FeatureLargeXattr}},
		{"user.with.dots-and_underscores", []byte("dots"), nil},
		{"user." + strings.Repeat("n", 200), []byte("long xattr name"), nil},
	}
	for _, v := range values {
		skipped, err := g.setxattr("xattrs/values", v.name, v.value, FeatureUserXattr)
		if err != nil {
			return err
		}
		if skipped {
			for _, f := range []Feature{FeatureEmptyXattr, FeatureLargeXattr, FeatureSharedXattr, FeatureManyXattrs} {
				g.m.Skipped[f] = g.m.Skipped[FeatureUserXattr]
			}
			return nil
		}
		g.tag("xattrs/values", append(v.f, FeatureUserXattr)...)
	}
	if err := g.file("xattrs/many", []byte("many xattrs\n"), 0o644, FeatureManyXattrs, FeatureUserXattr); err != nil {
		return err
	}
	for i := range 40 {
		if _, err := g.setxattr("xattrs/many", fmt.Sprintf("user.many-%02d", i), content(uint64(i), i*3), FeatureManyXattrs); err != nil {
			return err
		}
	}
	if err := g.mkdir("xattrs/dir", 0o755, FeatureUserXattr); err != nil {
		return err
	}
	if _, err := g.setxattr("xattrs/dir", "user.dir", []byte("on a directory"), FeatureUserXattr); err != nil {
		return err
	}
	if err := g.mkdir("xattrs/shared", 0o755); err != nil {
		return err
	}
	for i := range SharedXattrFiles {
		rel := fmt.Sprintf("xattrs/shared/f%02d", i)
		if err := g.file(rel, content(uint64(2000+i), 16), 0o644, FeatureSharedXattr, FeatureUserXattr); err != nil {
			return err
		}
		if _, err := g.setxattr(rel, "user.shared", sharedXattrValue, FeatureSharedXattr); err != nil {
			return err
		}
		if _, err := g.setxattr(rel, "user.index", fmt.Appendf(nil, "%d", i), FeatureSharedXattr); err != nil {
			return err
		}
	}
	// The hardlinked inode carries an xattr as well.
	if _, err := g.setxattr("hardlinks/a/first", "user.linked", []byte("hardlinked inode"), FeatureUserXattr); err != nil {
		return err
	}
	g.tag("hardlinks/a/first", FeatureUserXattr)
	return nil
}

// times creates entries with explicit, unusual mtimes. Timestamps that the
// filesystem cannot store are recorded as skipped.
func (g *gen) times() error {
	if err := g.mkdir("times", 0o755); err != nil {
		return err
	}
	type stamp struct {
		name string
		ts   unix.Timespec
		f    []Feature
	}
	stamps := []stamp{
		{"epoch", unix.Timespec{Sec: 0, Nsec: 0}, []Feature{FeatureEpochMtime}},
		{"pre-1970", unix.Timespec{Sec: -1_000_000_000, Nsec: 123_456_789}, []Feature{FeaturePre1970Mtime, FeatureNanoMtime}},
		{"just-before-1970", unix.Timespec{Sec: -1, Nsec: 999_999_999}, []Feature{FeaturePre1970Mtime, FeatureNanoMtime}},
		{"one-ns", unix.Timespec{Sec: 1_700_000_000, Nsec: 1}, []Feature{FeatureNanoMtime}},
		{"max-ns", unix.Timespec{Sec: 1_700_000_000, Nsec: 999_999_999}, []Feature{FeatureNanoMtime}},
		{"after-2038", unix.Timespec{Sec: 1<<31 + 5, Nsec: 500}, []Feature{FeatureY2038Mtime, FeatureNanoMtime}},
		{"year-2100", unix.Timespec{Sec: time.Date(2100, 1, 1, 12, 0, 0, 0, time.UTC).Unix(), Nsec: 987_654_321}, []Feature{FeatureFarMtime, FeatureY2038Mtime, FeatureNanoMtime}},
	}
	for _, s := range stamps {
		rel := "times/" + s.name
		if err := g.file(rel, []byte(s.name+"\n"), 0o644); err != nil {
			return err
		}
		if err := g.touch(rel, s.ts); err != nil {
			return err
		}
		var st unix.Stat_t
		if err := unix.Lstat(g.abs(rel), &st); err != nil {
			return g.wrap("stat", rel, err)
		}
		if st.Mtim != s.ts {
			for _, f := range s.f {
				if f != FeatureNanoMtime {
					g.m.Skipped[f] = fmt.Sprintf("filesystem under %s stored mtime %d.%09d as %d.%09d",
						g.root, s.ts.Sec, s.ts.Nsec, st.Mtim.Sec, st.Mtim.Nsec)
				}
			}
			continue
		}
		g.tag(rel, s.f...)
	}
	if err := g.mkdir("times/dir-2100", 0o755, FeatureDirMtime, FeatureNanoMtime); err != nil {
		return err
	}
	if err := g.file("times/dir-2100/child", nil, 0o644); err != nil {
		return err
	}
	g.dirTime["times/dir-2100"] = unix.Timespec{Sec: time.Date(2100, 6, 1, 0, 0, 0, 0, time.UTC).Unix(), Nsec: 42}
	if err := g.mkdir("times/dir-pre-1970", 0o755, FeatureDirMtime, FeatureNanoMtime); err != nil {
		return err
	}
	g.dirTime["times/dir-pre-1970"] = unix.Timespec{Sec: -86_400 * 365, Nsec: 7}
	if err := g.symlink("times/link", "epoch", FeatureSymlinkMtime); err != nil {
		return err
	}
	return g.touch("times/link", unix.Timespec{Sec: 1_234_567_890, Nsec: 500_000_000})
}

// devices creates device nodes, including numbers that need the new dev_t
// encoding (major > 255 or minor > 255).
func (g *gen) devices() error {
	if err := g.mkdir("devices", 0o755); err != nil {
		return err
	}
	devs := []struct {
		name         string
		typ          uint32
		major, minor uint32
		f            []Feature
	}{
		{"null", unix.S_IFCHR, 1, 3, []Feature{FeatureCharDevice}},
		{"sda1", unix.S_IFBLK, 8, 1, []Feature{FeatureBlockDevice}},
		{"char-259-70000", unix.S_IFCHR, 259, 70000, []Feature{FeatureCharDevice, FeatureLargeDevNumber}},
		{"block-259-70000", unix.S_IFBLK, 259, 70000, []Feature{FeatureBlockDevice, FeatureLargeDevNumber}},
		{"char-max", unix.S_IFCHR, 4095, 1<<20 - 1, []Feature{FeatureCharDevice, FeatureLargeDevNumber}},
		{"char-0-0", unix.S_IFCHR, 0, 0, []Feature{FeatureCharDevice}},
	}
	for _, d := range devs {
		if err := g.mknod("devices/"+d.name, d.typ, 0o660, d.major, d.minor, d.f...); err != nil {
			return err
		}
	}
	return nil
}

// owners sets explicit ownership on entries of every type, including ids
// above 65535 that need an extended on-disk inode.
func (g *gen) owners() error {
	if err := g.mkdir("owners", 0o755); err != nil {
		return err
	}
	ids := []struct {
		name     string
		uid, gid int
		f        []Feature
	}{
		{"root", 0, 0, nil},
		{"user-1000", 1000, 1000, nil},
		{"nobody-65534", 65534, 65534, nil},
		{"uid-65535", 65535, 0, nil},
		{"uid-65536", 65536, 65536, []Feature{FeatureLargeID}},
		{"uid-100000-gid-200000", 100000, 200000, []Feature{FeatureLargeID}},
		{"gid-only-4000000000", 0, 4_000_000_000, []Feature{FeatureLargeID}},
	}
	for _, id := range ids {
		rel := "owners/" + id.name
		if err := g.file(rel, []byte(id.name+"\n"), 0o644, append(id.f, FeatureOwnership)...); err != nil {
			return err
		}
		if err := g.lchown(rel, id.uid, id.gid); err != nil {
			return err
		}
	}
	// Ownership on other types; setuid/setgid set again after chown.
	if err := g.file("owners/setuid-1000", []byte("#!/bin/true\n"), 0o755, FeatureOwnership, FeatureSetuid, FeatureSetgid); err != nil {
		return err
	}
	if err := g.lchown("owners/setuid-1000", 1000, 100000); err != nil {
		return err
	}
	if err := g.chmod("owners/setuid-1000", 0o6755); err != nil {
		return err
	}
	if err := g.mkdir("owners/dir-100000", 0o750, FeatureOwnership, FeatureLargeID); err != nil {
		return err
	}
	if err := g.lchown("owners/dir-100000", 100000, 100000); err != nil {
		return err
	}
	if err := g.symlink("owners/link-1000", "user-1000", FeatureOwnership); err != nil {
		return err
	}
	if err := g.lchown("owners/link-1000", 1000, 1000); err != nil {
		return err
	}
	if err := g.mknod("owners/fifo-200000", unix.S_IFIFO, 0o600, 0, 0, FeatureOwnership, FeatureLargeID, FeatureFIFO); err != nil {
		return err
	}
	return g.lchown("owners/fifo-200000", 200000, 200000)
}

// lchown changes ownership without following symlinks.
func (g *gen) lchown(rel string, uid, gid int) error {
	if err := unix.Lchown(g.abs(rel), uid, gid); err != nil {
		return g.wrap(fmt.Sprintf("chown %d:%d", uid, gid), rel, err)
	}
	return nil
}

// capabilityV2 returns a VFS_CAP_REVISION_2 security.capability value
// granting cap_net_bind_service (10) and cap_net_raw (13), effective.
func capabilityV2() []byte {
	const (
		revision2 = 0x02000000
		effective = 0x000001
	)
	v := make([]byte, 20)
	binary.LittleEndian.PutUint32(v[0:], revision2|effective)
	binary.LittleEndian.PutUint32(v[4:], 1<<10|1<<13) // permitted, low word
	binary.LittleEndian.PutUint32(v[8:], 0)           // inheritable, low word
	binary.LittleEndian.PutUint32(v[12:], 0)          // permitted, high word
	binary.LittleEndian.PutUint32(v[16:], 0)          // inheritable, high word
	return v
}

// privilegedXattrs sets trusted.* and security.capability attributes.
func (g *gen) privilegedXattrs() error {
	if err := g.mkdir("xattrs-root", 0o755); err != nil {
		return err
	}
	if err := g.mkdir("xattrs-root/opaque", 0o755); err != nil {
		return err
	}
	if err := g.file("xattrs-root/opaque/hidden-below", nil, 0o644); err != nil {
		return err
	}
	if skipped, err := g.setxattr("xattrs-root/opaque", "trusted.overlay.opaque", []byte("y"), FeatureTrustedXattr); err != nil {
		return err
	} else if !skipped {
		g.tag("xattrs-root/opaque", FeatureTrustedXattr)
	}
	if err := g.file("xattrs-root/trusted-file", []byte("trusted\n"), 0o644); err != nil {
		return err
	}
	if skipped, err := g.setxattr("xattrs-root/trusted-file", "trusted.test", content(0x77, 300), FeatureTrustedXattr); err != nil {
		return err
	} else if !skipped {
		g.tag("xattrs-root/trusted-file", FeatureTrustedXattr)
	}
	// user.* is not allowed on symlinks; trusted.* is.
	if err := g.symlink("xattrs-root/link", "trusted-file"); err != nil {
		return err
	}
	if skipped, err := g.setxattr("xattrs-root/link", "trusted.on-symlink", []byte("link"), FeatureSymlinkXattr); err != nil {
		return err
	} else if !skipped {
		g.tag("xattrs-root/link", FeatureSymlinkXattr, FeatureTrustedXattr)
	}
	if err := g.file("xattrs-root/capability", []byte("#!/bin/true\n"), 0o755); err != nil {
		return err
	}
	if skipped, err := g.setxattr("xattrs-root/capability", "security.capability", capabilityV2(), FeatureCapability); err != nil {
		return err
	} else if !skipped {
		g.tag("xattrs-root/capability", FeatureCapability)
	}
	return nil
}

// finishDirs sets directory mtimes, deepest first, after all children
// exist (creating a child updates its parent's mtime).
func (g *gen) finishDirs() error {
	dirs := slices.Clone(g.dirs)
	sort.SliceStable(dirs, func(i, j int) bool {
		return strings.Count(dirs[i], "/") > strings.Count(dirs[j], "/")
	})
	for _, rel := range dirs {
		ts := g.dirTime[rel]
		if err := unix.UtimesNanoAt(unix.AT_FDCWD, g.abs(rel), []unix.Timespec{ts, ts}, unix.AT_SYMLINK_NOFOLLOW); err != nil {
			return g.wrap("set mtime of", rel, err)
		}
		var st unix.Stat_t
		if err := unix.Lstat(g.abs(rel), &st); err != nil {
			return g.wrap("stat", rel, err)
		}
		if st.Mtim != ts && ts.Sec < 0 {
			g.m.Skipped[FeaturePre1970Mtime] = fmt.Sprintf("filesystem under %s stored directory mtime %d.%09d as %d.%09d",
				g.root, ts.Sec, ts.Nsec, st.Mtim.Sec, st.Mtim.Nsec)
		}
	}
	return nil
}
