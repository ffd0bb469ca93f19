package erofs

import (
	"bytes"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/erofsd/erofsd/erofs/internal/disk"
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
		if got, err := os.Readlink(filepath.Join(mnt, "j_link")); err != nil || got != "a_compact_big" {
			t.Errorf("kernel reads the compressed symlink as %q, %v", got, err)
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

// TestKernelDifferentialCompressed mounts damaged compressed images (the
// seeds of FuzzCompressed with random bytes changed in their metadata)
// and reads every file with both the kernel and the reader: whatever
// both read must be equal, so the reader never returns bytes the kernel
// would not. (The reader may refuse more: Check-like strictness.)
func TestKernelDifferentialCompressed(t *testing.T) {
	requireKernelErofs(t)
	paths, _ := filepath.Glob("testdata/z_*.erofs")
	synth, _, synthBlob := buildSynth(t)
	dir := t.TempDir()
	blobPath := filepath.Join(dir, "blob")
	if err := os.WriteFile(blobPath, synthBlob, 0o644); err != nil {
		t.Fatal(err)
	}
	var both, kernelOnly, readerOnly int
	for _, p := range append(paths, "synth") {
		seed, limit, blob := synth, (synthDirBlk+1)*synthBlk, blobPath
		if p != "synth" {
			var err error
			if seed, err = os.ReadFile(p); err != nil {
				t.Fatal(err)
			}
			limit, blob = len(seed), ""
		}
		r := rand.New(rand.NewPCG(uint64(len(seed)), 17))
		for i := 0; i < 80; i++ {
			data := bytes.Clone(seed)
			for k := 1 + r.IntN(3); k > 0; k-- {
				at := disk.SuperOffset + disk.SuperSize + r.IntN(limit-disk.SuperOffset-disk.SuperSize)
				data[at] ^= byte(1 << r.IntN(8))
			}
			fixChecksum(data)
			imgPath := filepath.Join(dir, "img")
			if err := os.WriteFile(imgPath, data, 0o644); err != nil {
				t.Fatal(err)
			}
			mnt := t.TempDir()
			opts := ""
			if blob != "" {
				opts = "device=" + blob
			}
			if err := unix.Mount(imgPath, mnt, "erofs", unix.MS_RDONLY, opts); err != nil {
				continue // the kernel refuses the image
			}
			img, err := Open(bytes.NewReader(data), WithBlobs(BlobResolverFunc(func(int, string) (io.ReaderAt, error) {
				return bytes.NewReader(synthBlob), nil
			})))
			filepath.WalkDir(mnt, func(kp string, d os.DirEntry, err error) error {
				if err != nil || !d.Type().IsRegular() {
					return nil
				}
				want, kerr := os.ReadFile(kp)
				if img == nil {
					return nil
				}
				rel, _ := filepath.Rel(mnt, kp)
				got, rerr := img.ReadFile(rel)
				switch {
				case kerr == nil && rerr == nil:
					both++
					if !bytes.Equal(got, want) {
						t.Errorf("%s mutation %d: %s: reader's %d bytes differ from the kernel's %d at %d", filepath.Base(p), i, rel, len(got), len(want), firstDiff(got, want))
					}
				case kerr == nil:
					kernelOnly++
				case rerr == nil:
					readerOnly++
					t.Logf("%s mutation %d: %s: the kernel fails (%v), the reader reads %d bytes", filepath.Base(p), i, rel, kerr, len(got))
				}
				return nil
			})
			if err == nil {
				img.Close()
			}
			if err := unix.Unmount(mnt, 0); err != nil {
				t.Fatalf("unmount: %v", err)
			}
		}
	}
	t.Logf("files read by both: %d, by the kernel only: %d, by the reader only: %d", both, kernelOnly, readerOnly)
}
