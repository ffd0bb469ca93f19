package erofs

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"
)

// TestKernelAgreesCompressed mounts compressed images with the running
// kernel, the authority on the format, and compares every file it reads
// with the reader's bytes: mkfs.erofs images, and the hand-built layouts
// (FULL big pclusters, HEAD2, interlaced, fragments, PARTIAL_REF, blob
// pclusters), which would otherwise only be checked against this
// package's own reading of the format.
func TestKernelAgreesCompressed(t *testing.T) {
	requireKernelErofs(t)
	requireMkfs(t)
	src := filepath.Join(t.TempDir(), "src")
	makeCompressibleTree(t, src)
	for _, v := range zvariants {
		t.Run(v.name, func(t *testing.T) {
			path := mkfs(t, src, v.args...)
			data, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			img, err := Open(bytes.NewReader(data))
			if err != nil {
				t.Fatal(err)
			}
			defer img.Close()
			compareWithKernel(t, img, kernelMount(t, path, ""))
		})
	}
	t.Run("synth", func(t *testing.T) {
		data, want, blob := buildSynth(t)
		dir := t.TempDir()
		imgPath, blobPath := filepath.Join(dir, "img"), filepath.Join(dir, "blob")
		if err := os.WriteFile(imgPath, data, 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(blobPath, blob, 0o644); err != nil {
			t.Fatal(err)
		}
		mnt := kernelMount(t, imgPath, blobPath)
		for name, w := range want {
			got, err := os.ReadFile(filepath.Join(mnt, name))
			if err != nil {
				t.Errorf("kernel: %v", err)
				continue
			}
			if !bytes.Equal(got, w) {
				t.Errorf("kernel reads %s differently (%d bytes, first difference at %d)", name, len(got), firstDiff(got, w))
			}
		}
	})
}

// compareWithKernel compares every regular file and symlink the kernel
// shows under mnt with the image's.
func compareWithKernel(t *testing.T, img *Image, mnt string) {
	t.Helper()
	err := filepath.WalkDir(mnt, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(mnt, p)
		switch {
		case d.Type().IsRegular():
			want, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			got, err := img.ReadFile(rel)
			if err != nil {
				return err
			}
			if !bytes.Equal(got, want) {
				t.Errorf("%s: differs from the kernel's at %d", rel, firstDiff(got, want))
			}
		case d.Type()&os.ModeSymlink != 0:
			want, _ := os.Readlink(p)
			if got, err := img.ReadLink(rel); err != nil || got != want {
				t.Errorf("%s: link %q, %v; kernel %q", rel, got, err, want)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}
