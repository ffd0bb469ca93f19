// Package tests holds end-to-end tests: images built by erofs-image are
// mounted with the machine's own kernel and compared, entry by entry, with
// the tree they were built from.
package tests

import (
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/erofsd/erofsd/erofs/build"
	"github.com/erofsd/erofsd/internal/testutil/require"
	"github.com/erofsd/erofsd/internal/testutil/testimage"
	"github.com/erofsd/erofsd/internal/testutil/testmount"
	"github.com/erofsd/erofsd/internal/testutil/testtree"
	"github.com/erofsd/erofsd/internal/testutil/treecmp"
)

// source is a generated tree shared by the round-trip tests.
type source struct {
	dir      string
	manifest *testtree.Manifest
}

func generate(t *testing.T, big bool) source {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "src")
	m, err := testtree.Generate(dir, testtree.Options{Big: big})
	if err != nil {
		t.Fatal(err)
	}
	return source{dir, m}
}

func mountAndCompare(t *testing.T, want, image string, blobs []string, opts treecmp.Options) {
	t.Helper()
	mnt := t.TempDir()
	unmount, err := testmount.FileBacked(image, blobs, mnt)
	if err != nil {
		t.Fatalf("kernel refused the image: %v", err)
	}
	defer func() {
		if err := unmount(); err != nil {
			t.Error(err)
		}
	}()
	diffs, err := treecmp.Compare(want, mnt, opts)
	if err != nil {
		t.Fatal(err)
	}
	for i, d := range diffs {
		if i == 30 {
			t.Errorf("... and %d more", len(diffs)-i)
			break
		}
		t.Error(d)
	}
}

func needKernel(t *testing.T) {
	t.Helper()
	require.Host(t, require.FileBackedErofs)
}

// TestKernelRoundTripDir builds self-contained and chunked images of a
// tree exercising every feature, mounts them with the running kernel and
// compares type, mode, owners, size, mtime, content, link targets, rdev,
// xattrs and hardlink identity of every entry.
func TestKernelRoundTripDir(t *testing.T) {
	needKernel(t)
	src := generate(t, true)
	for _, f := range []testtree.Feature{testtree.FeatureBigSparse, testtree.FeatureLargeDir, testtree.FeatureLongName,
		testtree.FeatureHardlink, testtree.FeatureSharedXattr, testtree.FeatureCharDevice, testtree.FeatureLargeID} {
		if !src.manifest.Has(f) {
			t.Errorf("test tree lacks %s: %s", f, src.manifest.Skipped[f])
		}
	}
	cases := []struct {
		name string
		opts build.Options
	}{
		{"self-contained", build.Options{}},
		{"self-contained 64K holes", build.Options{ChunkSize: 64 << 10}},
		{"blob 1M chunks", build.Options{BlobDir: "blobs"}},
		{"blob 4K chunks", build.Options{BlobDir: "blobs", ChunkSize: 4096}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if c.opts.BlobDir != "" {
				c.opts.BlobDir = t.TempDir()
			}
			image, blobs, res := testimage.Build(t, src.dir, c.opts)
			if c.opts.BlobDir != "" && (res.Chunks == 0 || res.DedupeSaved == 0) {
				t.Errorf("blob build: %d chunks, dedupe saved %d bytes; the tree has duplicate regions", res.Chunks, res.DedupeSaved)
			}
			mountAndCompare(t, src.dir, image, blobs, treecmp.Options{})
			checkWithFsck(t, image, blobs)
		})
	}
}

// TestKernelRoundTripTar builds from a POSIX tar of the tree made by GNU
// tar (xattrs, sparse files, nanosecond times, hardlinks).
func TestKernelRoundTripTar(t *testing.T) {
	needKernel(t)
	require.Host(t, require.Tool("tar", "tar"))
	tarBin, _ := exec.LookPath("tar")
	src := generate(t, false)
	archive := filepath.Join(t.TempDir(), "layer.tar")
	cmd := exec.Command(tarBin, "--format=posix", "--xattrs", "--xattrs-include=*", "--sparse",
		"--numeric-owner", "-C", src.dir, "-cf", archive, ".")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("tar: %v\n%s", err, out)
	}
	for _, blob := range []bool{false, true} {
		opts := build.Options{}
		if blob {
			opts.BlobDir = t.TempDir()
		}
		image, blobs, _ := testimage.Build(t, archive, opts)
		// GNU tar does not record sockets, and stores the tree root's
		// own attributes as "./".
		mountAndCompare(t, src.dir, image, blobs, treecmp.Options{
			IgnorePath: func(rel string) bool {
				e, ok := src.manifest.Lookup(rel)
				return ok && e.Type&os.ModeSocket != 0
			},
		})
	}
}

// checkWithFsck runs erofs-utils' fsck.erofs, an independent checker, over
// the image and its blobs, decoding every file.
func checkWithFsck(t *testing.T, image string, blobs []string) {
	t.Helper()
	fsck, err := exec.LookPath("fsck.erofs")
	if err != nil {
		t.Log("fsck.erofs not installed: independent check skipped")
		return
	}
	args := []string{"--extract"}
	for _, b := range blobs {
		args = append(args, "--device="+b)
	}
	out, err := exec.Command(fsck, append(args, image)...).CombinedOutput()
	if err != nil {
		t.Errorf("fsck.erofs rejects the image: %v\n%s", err, out)
	}
}
