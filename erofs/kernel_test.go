package erofs

import (
	"path/filepath"
	"testing"

	"github.com/erofsd/erofsd/internal/testutil/require"
	"golang.org/x/sys/unix"
)

// requireKernelErofs skips unless the test can mount EROFS images.
func requireKernelErofs(t *testing.T) {
	t.Helper()
	if testing.Short() {
		t.Skip("kernel mounts skipped in -short mode")
	}
	require.Host(t, require.FileBackedErofs)
}

// kernelMount mounts an image file-backed (source = the image file, as
// mount(2) and not mount(8) does it) and returns the mount point.
func kernelMount(t *testing.T, imgPath, blobPath string) string {
	t.Helper()
	mnt := t.TempDir()
	data := ""
	if blobPath != "" {
		abs, err := filepath.Abs(blobPath)
		if err != nil {
			t.Fatal(err)
		}
		data = "device=" + abs
	}
	if err := unix.Mount(imgPath, mnt, "erofs", unix.MS_RDONLY, data); err != nil {
		t.Fatalf("file-backed erofs mount of %s: %v", imgPath, err)
	}
	t.Cleanup(func() {
		if err := unix.Unmount(mnt, 0); err != nil {
			t.Errorf("unmount %s: %v", mnt, err)
		}
	})
	return mnt
}

// TestKernelAgrees mounts mkfs.erofs images with the running kernel and
// compares everything the kernel shows (inode numbers = nids, modes,
// owners, nlink, sizes, exact mtimes, rdev, contents, link targets,
// xattrs, directory listings) with the reader's view.
func TestKernelAgrees(t *testing.T) {
	requireKernelErofs(t)
	for _, v := range variants {
		t.Run(v.name, func(t *testing.T) {
			_, im := buildVariant(t, v, treeOpts{linkToDir: true, special: true, owners: true})
			mnt := kernelMount(t, im.path, im.blobPath)
			compareTree(t, im.open(t), mnt, v, true)
		})
	}
}
