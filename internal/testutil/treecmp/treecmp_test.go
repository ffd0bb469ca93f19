package treecmp

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

const mib = 1 << 20

// build creates the small reference tree used by the table tests.
func build(t *testing.T, dir string) {
	t.Helper()
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	write := func(rel string, data []byte, perm os.FileMode) {
		t.Helper()
		must(os.WriteFile(filepath.Join(dir, rel), data, perm))
		must(os.Chmod(filepath.Join(dir, rel), perm))
	}
	must(os.MkdirAll(filepath.Join(dir, "d/sub"), 0o755))
	must(os.Mkdir(filepath.Join(dir, "empty"), 0o755))
	write("a", bytes.Repeat([]byte("0123456789"), 1000), 0o644)
	write("d/b", []byte("b\n"), 0o600)
	write("d/sub/c", []byte("c\n"), 0o644)
	write("x", []byte("with xattr\n"), 0o644)
	must(os.Symlink("a", filepath.Join(dir, "l")))
	write("h1", []byte("hardlinked\n"), 0o644)
	must(os.Link(filepath.Join(dir, "h1"), filepath.Join(dir, "d/h2")))
	must(unix.Mkfifo(filepath.Join(dir, "p"), 0o644))
	must(unix.Lsetxattr(filepath.Join(dir, "x"), "user.x", []byte("value"), 0))
	must(unix.Lsetxattr(filepath.Join(dir, "x"), "user.other", []byte("other"), 0))
	// 8 MiB sparse file with data at 4 MiB.
	f, err := os.Create(filepath.Join(dir, "sparse"))
	must(err)
	must(f.Truncate(8 * mib))
	_, err = f.WriteAt([]byte("data in the middle"), 4*mib)
	must(err)
	must(f.Close())
	if os.Geteuid() == 0 {
		must(unix.Mknod(filepath.Join(dir, "dev"), unix.S_IFCHR|0o600, int(unix.Mkdev(1, 3))))
		must(unix.Lchown(filepath.Join(dir, "d/b"), 1000, 100000))
	}
	// One fixed mtime everywhere, so that copying mtimes between trees
	// cannot depend on the walk order when inodes are regrouped.
	ts := unix.Timespec{Sec: 1_600_000_000, Nsec: 123_456_789}
	must(filepath.Walk(dir, func(p string, _ os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		return unix.UtimesNanoAt(unix.AT_FDCWD, p, []unix.Timespec{ts, ts}, unix.AT_SYMLINK_NOFOLLOW)
	}))
}

// syncTimes copies every mtime of want onto the same path in got, so a
// mutation's side effects on mtimes (of the file and its parent) vanish.
func syncTimes(t *testing.T, want, got string) {
	t.Helper()
	err := filepath.Walk(got, func(p string, _ os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(got, p)
		var st unix.Stat_t
		if err := unix.Lstat(filepath.Join(want, rel), &st); err != nil {
			return nil // only in got
		}
		return unix.UtimesNanoAt(unix.AT_FDCWD, p, []unix.Timespec{st.Mtim, st.Mtim}, unix.AT_SYMLINK_NOFOLLOW)
	})
	if err != nil {
		t.Fatal(err)
	}
}

// key identifies a difference in expectations.
type key struct{ path, what string }

func keys(diffs []Difference) []key {
	out := make([]key, len(diffs))
	for i, d := range diffs {
		out[i] = key{d.Path, d.What}
	}
	return out
}

func TestCompare(t *testing.T) {
	root := os.Geteuid() == 0
	type tc struct {
		name     string
		needRoot bool
		mutate   func(t *testing.T, got string)
		keepTime bool // do not resync mtimes after mutate
		opts     Options
		want     []key
		check    func(t *testing.T, diffs []Difference)
	}
	must := func(t *testing.T, err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	cases := []tc{
		{name: "identical"},
		{
			name:   "missing file",
			mutate: func(t *testing.T, got string) { must(t, os.Remove(filepath.Join(got, "d/b"))) },
			want:   []key{{"d/b", WhatPresence}},
		},
		{
			name:   "extra file",
			mutate: func(t *testing.T, got string) { must(t, os.WriteFile(filepath.Join(got, "new"), nil, 0o644)) },
			want:   []key{{"new", WhatPresence}},
		},
		{
			name:   "missing directory reported once",
			mutate: func(t *testing.T, got string) { must(t, os.RemoveAll(filepath.Join(got, "d/sub"))) },
			want:   []key{{"d", WhatNlink}, {"d/sub", WhatPresence}},
		},
		{
			name: "type",
			mutate: func(t *testing.T, got string) {
				must(t, os.Remove(filepath.Join(got, "p")))
				must(t, os.WriteFile(filepath.Join(got, "p"), nil, 0o644))
				must(t, os.Chmod(filepath.Join(got, "p"), 0o644))
			},
			want: []key{{"p", WhatType}},
		},
		{
			name:   "permission bits",
			mutate: func(t *testing.T, got string) { must(t, os.Chmod(filepath.Join(got, "a"), 0o640)) },
			want:   []key{{"a", WhatMode}},
			check: func(t *testing.T, diffs []Difference) {
				if diffs[0].Want != "0644" || diffs[0].Got != "0640" {
					t.Errorf("mode difference = %v", diffs[0])
				}
			},
		},
		{
			name:   "setuid",
			mutate: func(t *testing.T, got string) { must(t, unix.Chmod(filepath.Join(got, "a"), 0o4644)) },
			want:   []key{{"a", WhatMode}},
		},
		{
			name:   "setgid",
			mutate: func(t *testing.T, got string) { must(t, unix.Chmod(filepath.Join(got, "d"), 0o2755)) },
			want:   []key{{"d", WhatMode}},
		},
		{
			name:   "sticky",
			mutate: func(t *testing.T, got string) { must(t, unix.Chmod(filepath.Join(got, "empty"), 0o1755)) },
			want:   []key{{"empty", WhatMode}},
		},
		{
			name:     "uid",
			needRoot: true,
			mutate:   func(t *testing.T, got string) { must(t, unix.Lchown(filepath.Join(got, "l"), 1000, -1)) },
			want:     []key{{"l", WhatUID}},
		},
		{
			name:     "gid",
			needRoot: true,
			mutate:   func(t *testing.T, got string) { must(t, unix.Lchown(filepath.Join(got, "d/b"), -1, 200000)) },
			want:     []key{{"d/b", WhatGID}},
		},
		{
			name:     "owner ignored",
			needRoot: true,
			mutate:   func(t *testing.T, got string) { must(t, unix.Lchown(filepath.Join(got, "d/b"), 0, 0)) },
			opts:     Options{IgnoreOwner: true},
		},
		{
			name: "size",
			mutate: func(t *testing.T, got string) {
				must(t, os.Truncate(filepath.Join(got, "a"), 9999))
			},
			want: []key{{"a", WhatSize}},
		},
		{
			name: "content",
			mutate: func(t *testing.T, got string) {
				f, err := os.OpenFile(filepath.Join(got, "a"), os.O_WRONLY, 0)
				must(t, err)
				_, err = f.WriteAt([]byte("X"), 5555)
				must(t, err)
				must(t, f.Close())
			},
			want: []key{{"a", WhatContent}},
			check: func(t *testing.T, diffs []Difference) {
				d := diffs[0]
				if !strings.HasPrefix(d.Want, "sha256:") || !strings.Contains(d.Got, "first difference at byte 5555") {
					t.Errorf("content difference = %v", d)
				}
			},
		},
		{
			name: "content in want's hole",
			mutate: func(t *testing.T, got string) {
				f, err := os.OpenFile(filepath.Join(got, "sparse"), os.O_WRONLY, 0)
				must(t, err)
				_, err = f.WriteAt([]byte{1}, 7*mib+3)
				must(t, err)
				must(t, f.Close())
			},
			want: []key{{"sparse", WhatContent}},
			check: func(t *testing.T, diffs []Difference) {
				if !strings.Contains(diffs[0].Got, fmt.Sprintf("first difference at byte %d", 7*mib+3)) {
					t.Errorf("content difference = %v", diffs[0])
				}
			},
		},
		{
			name: "sparse versus written zeros is equal",
			mutate: func(t *testing.T, got string) {
				data, err := os.ReadFile(filepath.Join(got, "sparse"))
				must(t, err)
				must(t, os.Remove(filepath.Join(got, "sparse")))
				must(t, os.WriteFile(filepath.Join(got, "sparse"), data, 0o644))
				must(t, os.Chmod(filepath.Join(got, "sparse"), 0o644))
			},
		},
		{
			name:     "mtime nanoseconds",
			keepTime: true,
			mutate:   func(t *testing.T, got string) { bumpMtime(t, filepath.Join(got, "a"), 0, 1) },
			want:     []key{{"a", WhatMtime}},
		},
		{
			name:     "mtime nanoseconds ignored with MtimeSeconds",
			keepTime: true,
			mutate:   func(t *testing.T, got string) { bumpMtime(t, filepath.Join(got, "a"), 0, 1) },
			opts:     Options{MtimeSeconds: true},
		},
		{
			name:     "mtime seconds with MtimeSeconds",
			keepTime: true,
			mutate:   func(t *testing.T, got string) { bumpMtime(t, filepath.Join(got, "a"), 1, 0) },
			opts:     Options{MtimeSeconds: true},
			want:     []key{{"a", WhatMtime}},
		},
		{
			name:     "dir mtime",
			keepTime: true,
			mutate:   func(t *testing.T, got string) { bumpMtime(t, filepath.Join(got, "d"), 5, 0) },
			want:     []key{{"d", WhatMtime}},
		},
		{
			name:     "dir mtime ignored",
			keepTime: true,
			mutate:   func(t *testing.T, got string) { bumpMtime(t, filepath.Join(got, "d"), 5, 0) },
			opts:     Options{IgnoreDirMtime: true},
		},
		{
			name:     "symlink mtime",
			keepTime: true,
			mutate:   func(t *testing.T, got string) { bumpMtime(t, filepath.Join(got, "l"), 0, 7) },
			want:     []key{{"l", WhatMtime}},
		},
		{
			name: "symlink target",
			mutate: func(t *testing.T, got string) {
				must(t, os.Remove(filepath.Join(got, "l")))
				must(t, os.Symlink("b", filepath.Join(got, "l")))
			},
			want: []key{{"l", WhatTarget}},
		},
		{
			name:     "rdev",
			needRoot: true,
			mutate: func(t *testing.T, got string) {
				must(t, os.Remove(filepath.Join(got, "dev")))
				must(t, unix.Mknod(filepath.Join(got, "dev"), unix.S_IFCHR|0o600, int(unix.Mkdev(259, 70000))))
			},
			want: []key{{"dev", WhatRdev}},
			check: func(t *testing.T, diffs []Difference) {
				if diffs[0].Want != "1:3" || diffs[0].Got != "259:70000" {
					t.Errorf("rdev difference = %v", diffs[0])
				}
			},
		},
		{
			name: "xattr value",
			mutate: func(t *testing.T, got string) {
				must(t, unix.Lsetxattr(filepath.Join(got, "x"), "user.x", []byte("other"), 0))
			},
			want: []key{{"x", WhatXattr}},
			check: func(t *testing.T, diffs []Difference) {
				if diffs[0].Want != `user.x="value"` || diffs[0].Got != `user.x="other"` {
					t.Errorf("xattr difference = %v", diffs[0])
				}
			},
		},
		{
			name: "xattr missing",
			mutate: func(t *testing.T, got string) {
				must(t, unix.Lremovexattr(filepath.Join(got, "x"), "user.other"))
			},
			want: []key{{"x", WhatXattr}},
		},
		{
			name: "xattr extra on directory",
			mutate: func(t *testing.T, got string) {
				must(t, unix.Lsetxattr(filepath.Join(got, "d"), "user.new", make([]byte, 300), 0))
			},
			want: []key{{"d", WhatXattr}},
		},
		{
			name: "xattr ignored",
			mutate: func(t *testing.T, got string) {
				must(t, unix.Lsetxattr(filepath.Join(got, "d"), "user.new", []byte("1"), 0))
				must(t, unix.Lsetxattr(filepath.Join(got, "x"), "user.x", []byte("2"), 0))
			},
			opts: Options{IgnoreXattrs: []string{"user.new", "user.x*"}},
		},
		{
			name:     "trusted xattr",
			needRoot: true,
			mutate: func(t *testing.T, got string) {
				must(t, unix.Lsetxattr(filepath.Join(got, "empty"), "trusted.overlay.opaque", []byte("y"), 0))
			},
			want: []key{{"empty", WhatXattr}},
		},
		{
			name: "hardlink broken",
			mutate: func(t *testing.T, got string) {
				p := filepath.Join(got, "d/h2")
				data, err := os.ReadFile(p)
				must(t, err)
				must(t, os.Remove(p))
				must(t, os.WriteFile(p, data, 0o644))
				must(t, os.Chmod(p, 0o644))
			},
			want: []key{{"d/h2", WhatNlink}, {"d/h2", WhatHardlink}, {"h1", WhatNlink}, {"h1", WhatHardlink}},
		},
		{
			name: "hardlink regrouped",
			mutate: func(t *testing.T, got string) {
				// d/h2 becomes a name of d/sub/c instead of h1; make h1 and
				// d/sub/c agree with want in everything but identity.
				must(t, os.Remove(filepath.Join(got, "d/h2")))
				must(t, os.WriteFile(filepath.Join(got, "d/sub/c"), []byte("hardlinked\n"), 0o644))
				must(t, os.Link(filepath.Join(got, "d/sub/c"), filepath.Join(got, "d/h2")))
				must(t, os.Link(filepath.Join(got, "h1"), filepath.Join(got, "extra-name")))
			},
			want: []key{
				{"d/h2", WhatHardlink},
				{"d/sub/c", WhatNlink}, {"d/sub/c", WhatSize}, {"d/sub/c", WhatHardlink},
				{"extra-name", WhatPresence},
				{"h1", WhatHardlink},
			},
		},
		{
			name: "nlink only",
			mutate: func(t *testing.T, got string) {
				// A link outside the compared tree changes only nlink.
				must(t, os.Link(filepath.Join(got, "a"), filepath.Join(filepath.Dir(got), "outside")))
			},
			want: []key{{"a", WhatNlink}},
		},
		{
			name:   "dir nlink",
			mutate: func(t *testing.T, got string) { must(t, os.Mkdir(filepath.Join(got, "empty/child"), 0o755)) },
			want:   []key{{"empty", WhatNlink}, {"empty/child", WhatPresence}},
		},
		{
			name:   "dir nlink ignored",
			mutate: func(t *testing.T, got string) { must(t, os.Mkdir(filepath.Join(got, "empty/child"), 0o755)) },
			opts:   Options{IgnoreDirNlink: true, IgnorePath: func(p string) bool { return p == "empty/child" }},
		},
		{
			name:   "ignored path",
			mutate: func(t *testing.T, got string) { must(t, os.RemoveAll(filepath.Join(got, "d"))) },
			opts:   Options{IgnoreDirNlink: true, IgnorePath: func(p string) bool { return p == "d" || p == "h1" }},
		},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if c.needRoot && !root {
				t.Skip("needs root")
			}
			base := t.TempDir()
			want, got := filepath.Join(base, "want"), filepath.Join(base, "got")
			build(t, want)
			build(t, got)
			syncTimes(t, want, got)
			if c.mutate != nil {
				c.mutate(t, got)
			}
			if !c.keepTime {
				syncTimes(t, want, got)
			}
			diffs, err := Compare(want, got, c.opts)
			if err != nil {
				t.Fatal(err)
			}
			if gotKeys := keys(diffs); !slices.Equal(gotKeys, c.want) {
				t.Fatalf("differences:\n%s\nwant keys %v", fmtDiffs(diffs), c.want)
			}
			if c.check != nil {
				c.check(t, diffs)
			}
		})
	}
}

func bumpMtime(t *testing.T, p string, sec, nsec int64) {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Lstat(p, &st); err != nil {
		t.Fatal(err)
	}
	ts := unix.Timespec{Sec: st.Mtim.Sec + sec, Nsec: st.Mtim.Nsec + nsec}
	if ts.Nsec >= 1e9 {
		ts.Sec++
		ts.Nsec -= 1e9
	}
	if err := unix.UtimesNanoAt(unix.AT_FDCWD, p, []unix.Timespec{ts, ts}, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		t.Fatal(err)
	}
}

func fmtDiffs(diffs []Difference) string {
	var b strings.Builder
	for _, d := range diffs {
		fmt.Fprintf(&b, "  %s\n", d)
	}
	return b.String()
}

func TestDifferenceString(t *testing.T) {
	d := Difference{Path: "a/b", What: WhatMode, Want: "0644", Got: "0600"}
	if got, want := d.String(), `"a/b": mode differs: want 0644, got 0600`; got != want {
		t.Errorf("String() = %s, want %s", got, want)
	}
}

func TestCompareErrors(t *testing.T) {
	dir := t.TempDir()
	if _, err := Compare(filepath.Join(dir, "nope"), dir, Options{}); err == nil {
		t.Error("Compare with missing want root succeeded")
	}
	f := filepath.Join(dir, "file")
	if err := os.WriteFile(f, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := Compare(dir, f, Options{}); err == nil || !strings.Contains(err.Error(), "not a directory") {
		t.Errorf("Compare with file as got root: err = %v", err)
	}
}

// TestFirstDifference covers the content comparison directly, including a
// got file shorter than announced and differences at chunk boundaries.
func TestFirstDifference(t *testing.T) {
	dir := t.TempDir()
	mk := func(name string, size int64, writes map[int64]byte) *os.File {
		t.Helper()
		f, err := os.Create(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { f.Close() })
		if err := f.Truncate(size); err != nil {
			t.Fatal(err)
		}
		for off, b := range writes {
			if _, err := f.WriteAt([]byte{b}, off); err != nil {
				t.Fatal(err)
			}
		}
		return f
	}
	size := int64(3*chunkSize + 17)
	w := mk("w", size, map[int64]byte{0: 1, chunkSize: 2, size - 1: 3})
	for _, c := range []struct {
		name   string
		size   int64
		writes map[int64]byte
		want   int64
	}{
		{"equal", size, map[int64]byte{0: 1, chunkSize: 2, size - 1: 3}, -1},
		{"last byte", size, map[int64]byte{0: 1, chunkSize: 2, size - 1: 4}, size - 1},
		{"in hole at chunk end", size, map[int64]byte{0: 1, chunkSize: 2, size - 1: 3, 2*chunkSize - 1: 9}, 2*chunkSize - 1},
		{"missing data", size, map[int64]byte{0: 1, size - 1: 3}, chunkSize},
		{"short", size - 10, map[int64]byte{0: 1, chunkSize: 2}, size - 10},
	} {
		t.Run(c.name, func(t *testing.T) {
			g := mk(c.name, c.size, c.writes)
			got, err := firstDifference(w, g, size)
			if err != nil {
				t.Fatal(err)
			}
			if got != c.want {
				t.Errorf("firstDifference = %d, want %d", got, c.want)
			}
		})
	}
}

// TestDigestHoleAware checks that skipping holes gives the same digest as
// reading them.
func TestDigestHoleAware(t *testing.T) {
	f, err := os.Create(filepath.Join(t.TempDir(), "f"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := f.Truncate(5*chunkSize + 3); err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt([]byte("hello"), 2*chunkSize+100); err != nil {
		t.Fatal(err)
	}
	a, err := digest(f, true)
	if err != nil {
		t.Fatal(err)
	}
	b, err := digest(f, false)
	if err != nil {
		t.Fatal(err)
	}
	if a != b {
		t.Errorf("hole-aware digest %s != plain digest %s", a, b)
	}
}
