package tests

import (
	"bytes"
	"crypto/sha256"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"
	"testing"

	goerofs "github.com/erofs/go-erofs"
	"github.com/erofsd/erofsd/erofs/build"
	"github.com/erofsd/erofsd/internal/testutil/testimage"
)

// TestGoErofsReadsOurImages cross-checks our images with an independent
// reader, github.com/erofs/go-erofs: every entry's type, permissions,
// size, content and symlink target must match the source tree. It needs
// no root and no kernel.
func TestGoErofsReadsOurImages(t *testing.T) {
	src := generate(t, false)
	for _, blob := range []bool{false, true} {
		opts := build.Options{ChunkSize: 64 << 10}
		if blob {
			opts.BlobDir = t.TempDir()
		}
		image, blobs, _ := testimage.Build(t, src.dir, opts)
		img, err := os.Open(image)
		if err != nil {
			t.Fatal(err)
		}
		defer img.Close()
		var devs []io.ReaderAt
		for _, b := range blobs {
			f, err := os.Open(b)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			devs = append(devs, f)
		}
		fsys, err := goerofs.Open(img, goerofs.WithExtraDevices(devs...))
		if err != nil {
			t.Fatalf("blob=%v: go-erofs cannot open our image: %v", blob, err)
		}
		compareWithFS(t, src.dir, fsys)
	}
}

// lstatFS and readLinkFS are the parts of go-erofs's fs.FS we use.
type lstatFS interface {
	fs.FS
	Lstat(name string) (fs.FileInfo, error)
	ReadLink(name string) (string, error)
}

func compareWithFS(t *testing.T, root string, fsys fs.FS) {
	t.Helper()
	lfs, ok := fsys.(lstatFS)
	if !ok {
		t.Fatalf("%T has no Lstat/ReadLink", fsys)
	}
	checked := 0
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		name := filepath.ToSlash(rel)
		want, err := os.Lstat(p)
		if err != nil {
			return err
		}
		got, err := lfs.Lstat(name)
		if err != nil {
			t.Errorf("%s: %v", name, err)
			return nil
		}
		// go-erofs v0.3.1 keeps the raw stat mode in the low bits of its
		// FileMode (setuid, setgid and sticky are not mapped to the
		// fs.Mode* bits), so compare the type and the raw 12 bits.
		wantPerm := want.Sys().(*syscall.Stat_t).Mode & 0o7777
		if got.Mode().Type() != want.Mode().Type() || uint32(got.Mode())&0o7777 != wantPerm {
			t.Errorf("%s: mode %v (%#o), want %v (%#o)", name, got.Mode(), uint32(got.Mode())&0o7777, want.Mode(), wantPerm)
		}
		switch {
		case want.Mode().IsRegular():
			if got.Size() != want.Size() {
				t.Errorf("%s: size %d, want %d", name, got.Size(), want.Size())
			}
			if !sameContent(t, p, lfs, name) {
				t.Errorf("%s: content differs", name)
			}
		case want.Mode()&fs.ModeSymlink != 0:
			wt, _ := os.Readlink(p)
			gt, err := lfs.ReadLink(name)
			if err != nil || gt != wt {
				t.Errorf("%s: link %q (%v), want %q", name, gt, err, wt)
			}
		}
		checked++
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if checked < 100 {
		t.Fatalf("only %d entries checked", checked)
	}
}

func sameContent(t *testing.T, path string, fsys fs.FS, name string) bool {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	g, err := fsys.Open(name)
	if err != nil {
		t.Errorf("%s: %v", name, err)
		return false
	}
	defer g.Close()
	h1, h2 := sha256.New(), sha256.New()
	if _, err := io.Copy(h1, f); err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(h2, g); err != nil {
		t.Errorf("%s: reading with go-erofs: %v", name, err)
		return false
	}
	return bytes.Equal(h1.Sum(nil), h2.Sum(nil))
}
