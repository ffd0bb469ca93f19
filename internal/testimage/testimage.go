// Package testimage builds EROFS images for tests with erofs/build, so
// that tests across packages share one way of doing it.
package testimage

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/erofsd/erofsd/erofs/build"
)

// Build builds the directory src into a new image file in a temporary
// directory, with opts (set BlobDir for blob mode), and returns the image
// path, the paths of its blobs in device order, and the build result.
func Build(t testing.TB, src string, opts build.Options) (image string, blobs []string, res *build.Result) {
	t.Helper()
	image = filepath.Join(t.TempDir(), "image.erofs")
	f, err := os.Create(image)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b, err := build.New(f, opts)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Abort()
	if err := b.AddDir(context.Background(), src); err != nil {
		t.Fatalf("building %s: %v", src, err)
	}
	if res, err = b.Finish(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := f.Truncate(res.ImageSize); err != nil {
		t.Fatal(err)
	}
	for _, bl := range res.Blobs {
		blobs = append(blobs, filepath.Join(opts.BlobDir, bl.Digest))
	}
	return image, blobs, res
}
