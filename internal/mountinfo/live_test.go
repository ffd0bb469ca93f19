package mountinfo

import (
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/erofsd/erofsd/erofs/build"
	"github.com/erofsd/erofsd/internal/kmount"
	"github.com/erofsd/erofsd/internal/testutil/require"
	"github.com/erofsd/erofsd/internal/testutil/testimage"
	"golang.org/x/sys/unix"
)

// TestReadSelf parses this process's own mountinfo, whatever the machine.
func TestReadSelf(t *testing.T) {
	entries, err := Read()
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) == 0 {
		t.Fatal("no mounts")
	}
	for _, e := range entries {
		if e.FSType == "" || e.MountPoint == "" {
			t.Errorf("entry missing fields: %+v", e)
		}
	}
	if _, ok := Top(entries, "/"); !ok {
		t.Log("/ is not a mount point here (a chroot?)")
	}
}

// TestLive mounts, as root, a file-backed erofs image the way erofsd
// does (fsopen, source set) on a path with a space, checks it, stacks a
// tmpfs on it and hides it under a mount on its parent.
func TestLive(t *testing.T) {
	require.Host(t, require.FileBackedErofs)
	dir := t.TempDir()
	src := filepath.Join(dir, "src")
	if err := os.Mkdir(src, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(src, "f"), []byte("hi"), 0o644); err != nil {
		t.Fatal(err)
	}
	img, _, _ := testimage.Build(t, src, build.Options{})
	parent := filepath.Join(dir, "parent dir")
	mnt := filepath.Join(parent, "mnt\tpoint")
	if err := os.MkdirAll(mnt, 0o755); err != nil {
		t.Fatal(err)
	}
	mount := func(what func() error, target string) {
		t.Helper()
		if err := what(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = unix.Unmount(target, unix.MNT_DETACH) })
	}
	top := func() (Entry, bool) {
		t.Helper()
		entries, err := Read()
		if err != nil {
			t.Fatal(err)
		}
		return Top(entries, mnt)
	}

	if _, ok := top(); ok {
		t.Fatal("mounted before the test")
	}
	mount(func() error { return kmount.Mount(kmount.Spec{Source: img}, mnt) }, mnt)
	e, ok := top()
	if !ok {
		t.Fatal("erofs mount not found")
	}
	if err := CheckErofs(e, Erofs{Source: img}); err != nil {
		t.Errorf("%v (%+v)", err, e)
	}
	if err := CheckErofs(e, Erofs{FSID: "img"}); !errors.Is(err, ErrMismatch) {
		t.Errorf("fscache check of a file-backed mount: %v", err)
	}

	tmpfs := func(target, source string) func() error {
		return func() error { return unix.Mount(source, target, "tmpfs", 0, "size=4k") }
	}
	mount(tmpfs(mnt, "stacked"), mnt)
	if e, ok := top(); !ok || e.FSType != "tmpfs" || e.Source != "stacked" {
		t.Errorf("stacked: %+v %v", e, ok)
	} else if err := CheckErofs(e, Erofs{Source: img}); !errors.Is(err, ErrMismatch) {
		t.Errorf("tmpfs passed the check: %v", err)
	}
	if err := unix.Unmount(mnt, 0); err != nil {
		t.Fatal(err)
	}
	if e, ok := top(); !ok || e.FSType != "erofs" {
		t.Errorf("after the stacked unmount: %+v %v", e, ok)
	}

	mount(tmpfs(parent, "hiding"), parent)
	if e, ok := top(); ok {
		t.Errorf("hidden mount found: %+v", e)
	}
}
