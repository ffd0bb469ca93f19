package tests

import (
	"archive/tar"
	"bytes"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/erofsd/erofsd/erofs/build"
	"github.com/erofsd/erofsd/internal/testutil/testimage"
	"github.com/erofsd/erofsd/internal/testutil/testmount"
	"golang.org/x/sys/unix"
)

// writeLayer writes an OCI-style layer tar. Entries with a body are
// files; names ending in "/" are directories.
func writeLayer(t *testing.T, entries [][2]string) string {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range entries {
		h := &tar.Header{Name: e[0], Mode: 0o644, ModTime: time.Unix(1700000000, 0), Typeflag: tar.TypeReg, Size: int64(len(e[1]))}
		if e[0][len(e[0])-1] == '/' {
			h.Typeflag, h.Mode, h.Size = tar.TypeDir, 0o755, 0
		}
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		tw.Write([]byte(e[1]))
	}
	tw.Close()
	p := filepath.Join(t.TempDir(), "layer.tar")
	if err := os.WriteFile(p, buf.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestKernelOverlayWhiteouts builds one image per OCI layer and stacks
// them with overlayfs: the upper layer's whiteout must hide a lower file
// and its opaque marker must hide a lower directory's contents.
func TestKernelOverlayWhiteouts(t *testing.T) {
	needKernel(t)
	lower := writeLayer(t, [][2]string{
		{"etc/", ""}, {"etc/keep", "keep"}, {"etc/gone", "gone"},
		{"opaque/", ""}, {"opaque/old", "old"},
	})
	upper := writeLayer(t, [][2]string{
		{"etc/", ""}, {"etc/.wh.gone", ""}, {"etc/new", "new"},
		{"opaque/", ""}, {"opaque/.wh..wh..opq", ""}, {"opaque/fresh", "fresh"},
	})
	var mounts []string
	for _, layer := range []string{lower, upper} {
		image, blobs, _ := testimage.Build(t, layer, build.Options{BlobDir: t.TempDir()})
		mnt := t.TempDir()
		unmount, err := testmount.FileBacked(image, blobs, mnt)
		if err != nil {
			t.Fatal(err)
		}
		defer unmount()
		mounts = append(mounts, mnt)
	}
	merged := t.TempDir()
	if err := unix.Mount("overlay", merged, "overlay", unix.MS_RDONLY, "lowerdir="+mounts[1]+":"+mounts[0]); err != nil {
		t.Skipf("overlayfs not available: %v", err)
	}
	defer unix.Unmount(merged, unix.MNT_DETACH)

	list := func(dir string) []string {
		ents, err := os.ReadDir(filepath.Join(merged, dir))
		if err != nil {
			t.Fatal(err)
		}
		var names []string
		for _, e := range ents {
			names = append(names, e.Name())
		}
		return names
	}
	if got, want := list("etc"), []string{"keep", "new"}; !slices.Equal(got, want) {
		t.Errorf("etc: %v, want %v (whiteout not honoured)", got, want)
	}
	if got, want := list("opaque"), []string{"fresh"}; !slices.Equal(got, want) {
		t.Errorf("opaque: %v, want %v (opaque marker not honoured)", got, want)
	}
	if data, err := os.ReadFile(filepath.Join(merged, "etc/keep")); err != nil || string(data) != "keep" {
		t.Errorf("etc/keep: %q %v", data, err)
	}
}
