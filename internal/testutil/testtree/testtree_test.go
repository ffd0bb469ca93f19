package testtree_test

import (
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/erofsd/erofsd/internal/testutil/require"
	"github.com/erofsd/erofsd/internal/testutil/testtree"
	"github.com/erofsd/erofsd/internal/testutil/treecmp"
)

func lstat(t *testing.T, p string) unix.Stat_t {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Lstat(p, &st); err != nil {
		t.Fatal(err)
	}
	return st
}

func TestGenerateCoverage(t *testing.T) {
	dir := t.TempDir()
	m, err := testtree.Generate(dir, testtree.Options{Big: true})
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range testtree.AllFeatures() {
		reason, skipped := m.Skipped[f]
		switch {
		case skipped && m.Has(f):
			t.Errorf("feature %s both produced and skipped (%s)", f, reason)
		case skipped:
			t.Logf("feature %s skipped: %s", f, reason)
		case !m.Has(f):
			t.Errorf("feature %s neither produced nor skipped", f)
		}
	}
	if m.RootFeatures != (os.Geteuid() == 0) {
		t.Errorf("RootFeatures = %v as euid %d", m.RootFeatures, os.Geteuid())
	}
	// This machine's /tmp keeps xattrs and wide timestamps; make sure no
	// non-root feature silently went missing here.
	for _, f := range []testtree.Feature{testtree.FeatureUserXattr, testtree.FeatureBigSparse, testtree.FeaturePre1970Mtime, testtree.FeatureFarMtime} {
		if reason, ok := m.Skipped[f]; ok {
			t.Logf("note: %s skipped on this filesystem: %s", f, reason)
		}
	}

	// Every manifest entry exists with the recorded type and size, and
	// every path on disk is in the manifest.
	seen := map[string]bool{}
	err = filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		rel = filepath.ToSlash(rel)
		seen[rel] = true
		e, ok := m.Lookup(rel)
		if !ok {
			t.Errorf("%q on disk but not in manifest", rel)
			return nil
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		if info.Mode().Type() != e.Type {
			t.Errorf("%q: type %v, manifest says %v", rel, info.Mode().Type(), e.Type)
		}
		if e.Type == 0 && info.Size() != e.Size {
			t.Errorf("%q: size %d, manifest says %d", rel, info.Size(), e.Size)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range m.Entries {
		if !seen[e.Path] {
			t.Errorf("manifest entry %q missing on disk", e.Path)
		}
	}

	// Real disk use stays small although the apparent size is > 4 GiB.
	var blocks, apparent int64
	inodes := map[uint64]bool{}
	for _, e := range m.Entries {
		st := lstat(t, filepath.Join(dir, e.Path))
		if !inodes[st.Ino] {
			inodes[st.Ino] = true
			blocks += st.Blocks * 512
			apparent += st.Size
		}
	}
	if blocks >= 20<<20 {
		t.Errorf("tree uses %d bytes of disk, want < 20 MiB", blocks)
	}
	if apparent < 4<<30 {
		t.Errorf("apparent size %d, want > 4 GiB with Options.Big", apparent)
	}
	t.Logf("%d entries, %d bytes on disk, %d bytes apparent", len(m.Entries), blocks, apparent)
}

func TestGenerateDetails(t *testing.T) {
	dir := t.TempDir()
	m, err := testtree.Generate(dir, testtree.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if m.Has(testtree.FeatureBigSparse) {
		t.Error("big sparse file generated without Options.Big")
	}
	abs := func(rel string) string { return filepath.Join(dir, rel) }

	ents, err := os.ReadDir(abs("large-dir"))
	if err != nil {
		t.Fatal(err)
	}
	if len(ents) != testtree.LargeDirEntries {
		t.Errorf("large-dir has %d entries, want %d", len(ents), testtree.LargeDirEntries)
	}
	var direntBytes int
	for _, e := range ents {
		direntBytes += len(e.Name()) + 12 // EROFS: 12-byte dirent plus name
	}
	if direntBytes < 8*4096 {
		t.Errorf("large-dir dirents need %d bytes, want several 4096-byte blocks", direntBytes)
	}

	for _, p := range m.Paths(testtree.FeatureLongName) {
		if n := len(filepath.Base(p)); n != 255 {
			t.Errorf("long name %q has %d bytes, want 255", p, n)
		}
	}
	target, err := os.Readlink(abs(m.Paths(testtree.FeatureLongLink)[0]))
	if err != nil {
		t.Fatal(err)
	}
	if len(target) != testtree.LongLinkTargetLen {
		t.Errorf("long symlink target has %d bytes", len(target))
	}
	if target, _ := os.Readlink(abs("links/absolute")); !strings.HasPrefix(target, "/") {
		t.Errorf("absolute symlink target %q", target)
	}

	// Hardlink group of three across directories.
	first := lstat(t, abs("hardlinks/a/first"))
	if first.Nlink != 3 {
		t.Errorf("hardlink nlink = %d, want 3", first.Nlink)
	}
	for _, p := range []string{"hardlinks/b/second", "hardlinks/third"} {
		if st := lstat(t, abs(p)); st.Ino != first.Ino {
			t.Errorf("%s is not a hardlink of hardlinks/a/first", p)
		}
	}

	modes := map[string]uint32{
		"modes/setuid": 0o4755, "modes/setgid": 0o2755, "modes/sticky-dir": 0o1777,
		"modes/mode-0000": 0, "modes/mode-0777": 0o777, "modes/all-bits": 0o7777,
	}
	for p, want := range modes {
		if got := lstat(t, abs(p)).Mode & 0o7777; got != want {
			t.Errorf("%s mode %04o, want %04o", p, got, want)
		}
	}

	if lstat(t, abs("special/socket")).Mode&unix.S_IFMT != unix.S_IFSOCK {
		t.Error("special/socket is not a socket")
	}
	if lstat(t, abs("special/fifo")).Mode&unix.S_IFMT != unix.S_IFIFO {
		t.Error("special/fifo is not a FIFO")
	}

	// Sparse files stay sparse.
	st := lstat(t, abs("sparse/holes"))
	if st.Blocks*512 >= st.Size/2 {
		t.Errorf("sparse/holes uses %d bytes for %d apparent", st.Blocks*512, st.Size)
	}

	if _, skipped := m.Skipped[testtree.FeatureSharedXattr]; !skipped {
		paths := m.Paths(testtree.FeatureSharedXattr)
		if len(paths) != testtree.SharedXattrFiles {
			t.Errorf("%d files with the shared xattr, want %d", len(paths), testtree.SharedXattrFiles)
		}
		var first []byte
		for _, p := range paths {
			v := make([]byte, 256)
			n, err := unix.Lgetxattr(abs(p), "user.shared", v)
			if err != nil {
				t.Fatal(err)
			}
			if first == nil {
				first = v[:n]
			} else if string(first) != string(v[:n]) {
				t.Errorf("%s: user.shared differs", p)
			}
		}
	}

	// Explicit timestamps, nanoseconds included.
	times := map[string]unix.Timespec{
		"times/one-ns":           {Sec: 1_700_000_000, Nsec: 1},
		"times/year-2100":        {Sec: 4102488000, Nsec: 987_654_321},
		"times/link":             {Sec: 1_234_567_890, Nsec: 500_000_000},
		"times/dir-pre-1970":     {Sec: -86_400 * 365, Nsec: 7},
		"times/pre-1970":         {Sec: -1_000_000_000, Nsec: 123_456_789},
		"times/epoch":            {},
		"times/after-2038":       {Sec: 1<<31 + 5, Nsec: 500},
		"times/just-before-1970": {Sec: -1, Nsec: 999_999_999},
	}
	for p, want := range times {
		if _, skipped := m.Skipped[testtree.FeaturePre1970Mtime]; skipped && want.Sec < 0 {
			continue
		}
		if got := lstat(t, abs(p)).Mtim; got != want {
			t.Errorf("%s mtime %d.%09d, want %d.%09d", p, got.Sec, got.Nsec, want.Sec, want.Nsec)
		}
	}
}

func TestGenerateRoot(t *testing.T) {
	require.Host(t, require.Root) // device nodes, ownership and privileged xattrs
	dir := t.TempDir()
	m, err := testtree.Generate(dir, testtree.Options{Root: testtree.RootOn})
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range testtree.RootFeatures() {
		if !m.Has(f) {
			t.Errorf("root feature %s missing (skipped: %q)", f, m.Skipped[f])
		}
	}
	abs := func(rel string) string { return filepath.Join(dir, rel) }
	st := lstat(t, abs("devices/char-259-70000"))
	if st.Mode&unix.S_IFMT != unix.S_IFCHR || unix.Major(st.Rdev) != 259 || unix.Minor(st.Rdev) != 70000 {
		t.Errorf("devices/char-259-70000: mode %o rdev %d:%d", st.Mode, unix.Major(st.Rdev), unix.Minor(st.Rdev))
	}
	st = lstat(t, abs("owners/uid-100000-gid-200000"))
	if st.Uid != 100000 || st.Gid != 200000 {
		t.Errorf("owners/uid-100000-gid-200000 owned by %d:%d", st.Uid, st.Gid)
	}
	st = lstat(t, abs("owners/setuid-1000"))
	if st.Mode&0o7777 != 0o6755 || st.Uid != 1000 {
		t.Errorf("owners/setuid-1000 mode %04o uid %d", st.Mode&0o7777, st.Uid)
	}
	buf := make([]byte, 64)
	n, err := unix.Lgetxattr(abs("xattrs-root/capability"), "security.capability", buf)
	if err != nil {
		t.Fatal(err)
	}
	if n != 20 || buf[3] != 2 {
		t.Errorf("security.capability = %x, want a 20-byte v2 value", buf[:n])
	}
	n, err = unix.Lgetxattr(abs("xattrs-root/opaque"), "trusted.overlay.opaque", buf)
	if err != nil || string(buf[:n]) != "y" {
		t.Errorf("trusted.overlay.opaque = %q, %v", buf[:n], err)
	}
	if data, err := os.ReadFile(abs("modes/mode-0000")); err != nil || len(data) == 0 {
		t.Errorf("modes/mode-0000 as root: %d bytes, %v", len(data), err)
	}
}

func TestGenerateRootOff(t *testing.T) {
	dir := t.TempDir()
	m, err := testtree.Generate(dir, testtree.Options{Root: testtree.RootOff, SkipNonUTF8Names: true})
	if err != nil {
		t.Fatal(err)
	}
	if m.RootFeatures {
		t.Error("RootFeatures set with RootOff")
	}
	for _, f := range append(testtree.RootFeatures(), testtree.FeatureNonUTF8Name) {
		if m.Has(f) {
			t.Errorf("feature %s present: %v", f, m.Paths(f))
		}
		if _, ok := m.Skipped[f]; !ok {
			t.Errorf("feature %s not recorded as skipped", f)
		}
	}
	// Everything is readable by its owner without privileges.
	for _, e := range m.Entries {
		if e.Type == 0 && e.Size > 0 {
			if st := lstat(t, filepath.Join(dir, e.Path)); st.Mode&0o400 == 0 {
				t.Errorf("%s has content but is not readable by its owner", e.Path)
			}
		}
	}
}

// TestDeterministic generates two trees and compares them attribute by
// attribute.
func TestDeterministic(t *testing.T) {
	base := t.TempDir()
	a, b := filepath.Join(base, "a"), filepath.Join(base, "b")
	ma, err := testtree.Generate(a, testtree.Options{})
	if err != nil {
		t.Fatal(err)
	}
	mb, err := testtree.Generate(b, testtree.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if len(ma.Entries) != len(mb.Entries) {
		t.Fatalf("%d vs %d entries", len(ma.Entries), len(mb.Entries))
	}
	for i := range ma.Entries {
		ea, eb := ma.Entries[i], mb.Entries[i]
		if ea.Path != eb.Path || ea.Type != eb.Type || ea.Size != eb.Size || !slices.Equal(ea.Features, eb.Features) {
			t.Errorf("entry %d: %+v vs %+v", i, ea, eb)
		}
	}
	treecmp.Expect(t, a, b, treecmp.Options{})
}

func TestGenerateNotEmpty(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "x"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := testtree.Generate(dir, testtree.Options{}); err == nil || !strings.Contains(err.Error(), "not empty") {
		t.Errorf("Generate into non-empty dir: err = %v", err)
	}
}

func TestRootOnWithoutPrivileges(t *testing.T) {
	if os.Geteuid() == 0 {
		t.Skip("runs only without root")
	}
	if _, err := testtree.Generate(t.TempDir(), testtree.Options{Root: testtree.RootOn}); err == nil {
		t.Error("RootOn without privileges succeeded")
	}
}
